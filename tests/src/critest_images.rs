//! The images critest v1.37 (the CRI validation suite, `sigs.k8s.io/cri-tools`) pulls, built
//! offline from Debian packages and pushed to a local registry under the public names critest
//! fixes in its source, so that skiffd's registry mirrors serve them as registry.k8s.io and
//! gcr.io would.
//!
//! critest names versions that no Debian package has. Each image says what really serves under
//! its name in the labels `org.opencontainers.image.version` and `…description` (the versions
//! below are Debian 12's at the time of writing; the labels carry the downloaded package's):
//!
//! | critest's name | what serves it |
//! |---|---|
//! | `registry.k8s.io/e2e-test-images/busybox:1.29-2` | Debian's busybox 1.35.0 (`busybox`, the dynamically linked build), with `pgrep` (procps) and `ipcs` (util-linux) |
//! | `…/nginx:1.14-2` | Debian's nginx 1.22.1 ([`nginx_spec`]) |
//! | `…/httpd:2.4.39-4` | Apache httpd 2.4.71 from Debian's `apache2-bin`, on the busybox above |
//! | `…/nonewprivs:1.3` | `skiff-nnp` (prints its effective uid), setuid root, on the busybox above |
//! | `registry.k8s.io/pause:3.9`, `k8s.gcr.io/pause:3.9` | the busybox above, waiting to be stopped |
//! | `gcr.io/k8s-staging-cri-tools/test-image-*` | the busybox above plus what cri-tools' `images/` Dockerfiles add: a file, a `USER`, a user and group |
//! | `gcr.io/k8s-staging-cri-tools/hostnet-nginx-amd64` | Debian's nginx 1.22.1 listening on 12003 (upstream: nginx 1.25.0) |
//!
//! Why busybox comes from Debian's `busybox` package and not `busybox-static` (which
//! [`crate::busybox`] uses): the static build runs applets inside the shell, so `sh -c ls` never
//! executes `/bin/ls` and critest's MaskedPaths spec (which masks `/bin/ls`) cannot see it
//! refused; the dynamic build executes applets as the busybox image does. Applets are hard links
//! to `/bin/busybox` as in that image: with symbolic links, masking `/bin/ls` would mask
//! busybox itself. Neither Debian build has `pgrep` or `ipcs`, which critest's specs run.
//!
//! One image cannot be built: `gcr.io/k8s-staging-cri-tools/test-image-digest`, which critest
//! pulls by a digest that only the upstream registry's bytes have.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::busybox::{applets_of, IMAGE_PATH};
use crate::cluster_images::{deb_version, nginx_spec, publish, unpack_debs, Pushed, RootBuilder};
use crate::oci_layout::{Entry, ImageSpec, Layer};

/// critest's registry of test images (cri-tools `pkg/validate/consts.go`).
const CRI_TOOLS: &str = "gcr.io/k8s-staging-cri-tools";
/// The Kubernetes e2e test images critest uses.
const E2E: &str = "registry.k8s.io/e2e-test-images";

/// The busybox image's users, with www-data (the `test-image-user-username*` images' USER).
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
";
const GROUP: &str = "root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
www-data:x:33:
nogroup:x:65534:
";

/// What `images/image-predefined-group/Dockerfile` adds with busybox's `adduser -u 1000 -D
/// default-user`, `addgroup -g 50000 group-defined-in-image` and `addgroup default-user
/// group-defined-in-image`: the SupplementalGroupsPolicy specs expect gid 50000 from here.
const PREDEFINED_USER: &str = "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n";
const PREDEFINED_GROUPS: &str =
    "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n";

/// Apache's configuration for the httpd image: what the official image's serves (port 80,
/// `It works!` from htdocs, logs to the container's output, workers as `daemon`) with the few
/// modules that needs.
const HTTPD_CONF: &str = r#"ServerRoot "/usr/local/apache2"
Listen 80
LoadModule mpm_event_module modules/mod_mpm_event.so
LoadModule authz_core_module modules/mod_authz_core.so
LoadModule mime_module modules/mod_mime.so
LoadModule dir_module modules/mod_dir.so
User daemon
Group daemon
DefaultRuntimeDir logs
PidFile logs/httpd.pid
ErrorLog /proc/self/fd/2
LogLevel warn
LogFormat "%h %l %u %t \"%r\" %>s %b" common
CustomLog /proc/self/fd/1 common
TypesConfig conf/mime.types
DocumentRoot "/usr/local/apache2/htdocs"
<Directory "/usr/local/apache2/htdocs">
    Require all granted
</Directory>
DirectoryIndex index.html
"#;

/// Everything built, pushed to `registry` (`host:port`, plain HTTP) under critest's names.
/// `nnp` is the `skiff-nnp` binary; `work` keeps downloaded packages and layouts between runs.
pub fn push_critest_images(registry: &str, nnp: &Path, work: &Path) -> Result<Vec<Pushed>> {
    fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let (busybox, busybox_version) = busybox_layer(&work.join("debs-busybox"))?;
    let base = |description: &str| {
        ImageSpec::new()
            .layer(busybox.clone())
            .env("PATH", IMAGE_PATH)
            .cmd(&["sh"])
            .label("org.opencontainers.image.version", &busybox_version)
            .label("org.opencontainers.image.description", description)
    };
    let mut pushed = Vec::new();
    let mut push = |spec: &ImageSpec, repository: &str, tags: &[&str]| -> Result<()> {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        pushed.extend(publish(spec, work, registry, repository, &tags)?);
        Ok(())
    };

    // The default image of nearly every spec.
    push(
        &base("Debian busybox with pgrep and ipcs, standing in for e2e busybox 1.29"),
        &format!("{E2E}/busybox"),
        &["1.29-2"],
    )?;

    // cri-tools' images/image-test: busybox plus an empty file named after the image or tag,
    // so that each name is a different image (test-image-tags:1..3 are one image).
    let with_file = |file: &str| {
        base("cri-tools test image on Debian busybox").layer(Layer::new().file(
            &format!("/{file}"),
            "",
            0o644,
        ))
    };
    for image in [
        "test-image-1",
        "test-image-2",
        "test-image-3",
        "test-image-latest",
    ] {
        push(
            &with_file(image),
            &format!("{CRI_TOOLS}/{image}"),
            &["latest"],
        )?;
    }
    push(
        &with_file("same-image"),
        &format!("{CRI_TOOLS}/test-image-tags"),
        &["1", "2", "3"],
    )?;
    for tag in ["test", "all"] {
        push(
            &with_file(tag),
            &format!("{CRI_TOOLS}/test-image-tag"),
            &[tag],
        )?;
    }

    // cri-tools' images/image-user: busybox with a USER, whose uid or name ImageStatus reports.
    for (image, user) in [
        ("test-image-user-uid", "1002"),
        ("test-image-user-username", "www-data"),
        ("test-image-user-uid-group", "1003:1004"),
        ("test-image-user-username-group", "www-data:1004"),
    ] {
        let spec = base("cri-tools user test image on Debian busybox").user(user);
        push(&spec, &format!("{CRI_TOOLS}/{image}"), &["latest"])?;
    }

    let passwd = format!("{PASSWD}{PREDEFINED_USER}");
    let group = format!("{GROUP}{PREDEFINED_GROUPS}");
    let predefined = base("cri-tools predefined-group test image on Debian busybox")
        .layer(
            Layer::new()
                .file("/etc/passwd", passwd, 0o644)
                .file("/etc/group", group, 0o644)
                .entry(Entry::dir("/home/default-user", 0o755).owner(1000, 1000)),
        )
        .user("1000");
    push(
        &predefined,
        &format!("{CRI_TOOLS}/test-image-predefined-group"),
        &["latest"],
    )?;

    // The kubelet's pause image, pulled from two registries by one spec and run with its own
    // entrypoint by another: a shell that waits until it is stopped, as pause does.
    let pause = base("Debian busybox waiting to be stopped, standing in for pause 3.9")
        .entrypoint(&[
            "sh",
            "-c",
            "trap 'exit 0' TERM INT; sleep 2147483647 & wait",
        ])
        .cmd(&[]);
    push(&pause, "registry.k8s.io/pause", &["3.9"])?;

    let (nginx, nginx_version) = nginx_spec(&work.join("debs-nginx"))?;
    let nginx = nginx.label("org.opencontainers.image.version", &nginx_version);
    push(
        &nginx
            .clone()
            .label("org.opencontainers.image.description", "Debian nginx"),
        &format!("{E2E}/nginx"),
        &["1.14-2"],
    )?;
    // cri-tools' images/hostnet-nginx: nginx serving on 12003, for host-network pods.
    let hostnet = nginx
        .label("org.opencontainers.image.description", "Debian nginx on port 12003")
        .layer(Layer::new().file(
            "/etc/nginx/conf.d/default.conf",
            "server {\n    listen 12003;\n    server_name localhost;\n    \
             location / {\n        root /usr/share/nginx/html;\n        index index.html;\n    }\n}\n",
            0o644,
        ));
    push(
        &hostnet,
        &format!("{CRI_TOOLS}/hostnet-nginx-amd64"),
        &["latest"],
    )?;

    let (apache, apache_version) = apache_layer(&work.join("debs-apache"))?;
    let httpd = ImageSpec::new()
        .layer(busybox.clone())
        .layer(apache)
        .env("PATH", &format!("/usr/local/apache2/bin:{IMAGE_PATH}"))
        .working_dir("/usr/local/apache2")
        // The official image's `httpd-foreground`, without its script: Debian's Apache is built
        // for /etc/apache2, so the server root and config file are given.
        .cmd(&[
            "httpd",
            "-d",
            "/usr/local/apache2",
            "-f",
            "conf/httpd.conf",
            "-D",
            "FOREGROUND",
        ])
        .label("org.opencontainers.image.version", &apache_version)
        .label(
            "org.opencontainers.image.description",
            "Debian's Apache httpd on Debian busybox",
        );
    push(&httpd, &format!("{E2E}/httpd"), &["2.4.39-4"])?;

    // kubernetes test/images/nonewprivs: a setuid-root program printing its effective uid.
    let mut nnp_files = RootBuilder::default();
    nnp_files.host_file(nnp, "/usr/local/bin/nnp", 0o4755)?;
    nnp_files.libraries_of(nnp)?;
    let nonewprivs = base("skiff-nnp, setuid root, on Debian busybox")
        .layer(nnp_files.into_layer())
        .cmd(&["nnp"]);
    push(&nonewprivs, &format!("{E2E}/nonewprivs"), &["1.3"])?;

    Ok(pushed)
}

/// The busybox layer every image here builds on, and busybox's version: Debian's dynamically
/// linked busybox at `/bin/busybox`, each applet a hard link to it in `/bin`, the shared
/// libraries it and the extra tools load, users and the usual directories.
fn busybox_layer(debs: &Path) -> Result<(Layer, String)> {
    let root = unpack_debs(debs, &["busybox"])?;
    let binary = root.join("bin/busybox");
    let version = deb_version(debs, "busybox")?;

    let mut files = RootBuilder::default();
    // `libraries_of` stores libraries under /usr as Debian does; /bin stays a directory of its
    // own, as in the busybox image, so only the library directories lead into /usr.
    files.symlink("/lib", "usr/lib");
    files.symlink("/lib64", "usr/lib64");
    files.host_file(&binary, "/bin/busybox", 0o755)?;
    files.libraries_of(&binary)?;
    for tool in ["/usr/bin/pgrep", "/usr/bin/ipcs"] {
        files.host_file(Path::new(tool), tool, 0o755)?;
        files.libraries_of(Path::new(tool))?;
    }
    files.add("/etc/passwd", PASSWD.into(), 0o644);
    files.add("/etc/group", GROUP.into(), 0o644);
    files.dir("/tmp", 0o1777);
    files.dir("/root", 0o700);
    files.dir("/home", 0o755);
    files.dir("/var/www", 0o755);
    files.dir("/usr/local/bin", 0o755);
    // Mount points exist as in real images, so a read-only rootfs can still be mounted on.
    for dir in ["/dev", "/proc", "/sys"] {
        files.dir(dir, 0o755);
    }
    // Hard links come after their target, which `into_layer` has written.
    let mut layer = files.into_layer();
    for applet in applets_of(&binary)? {
        layer = layer.hardlink(&format!("/bin/{applet}"), "/bin/busybox");
    }
    Ok((layer, version))
}

/// Apache from Debian's `apache2-bin`, laid out as the official httpd image: the server as
/// `/usr/local/apache2/bin/httpd` (upstream's name; Debian calls it apache2), its modules, a
/// configuration and the `It works!` page. Returns the layer and Apache's version.
fn apache_layer(debs: &Path) -> Result<(Layer, String)> {
    let root = unpack_debs(debs, &["apache2-bin"])?;
    let version = deb_version(debs, "apache2-bin")?;
    let binary = root.join("usr/sbin/apache2");

    let mut files = RootBuilder::default();
    files.host_file(&binary, "/usr/local/apache2/bin/httpd", 0o755)?;
    files.libraries_of(&binary)?;
    for module in ["mpm_event", "authz_core", "mime", "dir"] {
        let so = root.join(format!("usr/lib/apache2/modules/mod_{module}.so"));
        files.host_file(
            &so,
            &format!("/usr/local/apache2/modules/mod_{module}.so"),
            0o644,
        )?;
        files.libraries_of(&so)?;
    }
    files.add(
        "/usr/local/apache2/conf/httpd.conf",
        HTTPD_CONF.into(),
        0o644,
    );
    files.add(
        "/usr/local/apache2/conf/mime.types",
        b"text/html\thtml htm\ntext/plain\ttxt\n".to_vec(),
        0o644,
    );
    files.add(
        "/usr/local/apache2/htdocs/index.html",
        b"<html><body><h1>It works!</h1></body></html>\n".to_vec(),
        0o644,
    );
    files.dir("/usr/local/apache2/logs", 0o755);
    Ok((files.into_layer(), version))
}
