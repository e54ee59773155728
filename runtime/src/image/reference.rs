//! Image references, normalized as containerd and Docker do.
//!
//! `busybox` becomes `docker.io/library/busybox:latest`; a reference with a digest keeps only the
//! digest (a pull by digest records no tag).
//!
//! The grammar is the distribution project's (`name[:tag][@digest]`, name = `[domain/]path`),
//! checked by hand: oci-spec's parser compiles a Unicode regex that stays in memory (5.4 MB
//! measured in skiffd) for the daemon's whole life.

use super::ImageError;
use oci_client::Reference;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host as written by the user after normalization, e.g. `docker.io`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag, absent for a pull by digest.
    pub tag: Option<String>,
    /// Manifest digest, for a pull by digest.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalizes `input`.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let invalid = |reason: String| ImageError::InvalidReference {
            reference: input.to_string(),
            reason,
        };
        if input.trim() != input || input.is_empty() {
            return Err(invalid("empty or surrounded by white space".into()));
        }
        // A bare 64-hex name would be normalized to docker.io/library/<hex>; Docker refuses it
        // to avoid confusion with image IDs, and so do we.
        let bare = input.split([':', '@']).next().unwrap_or(input);
        if bare.len() == 64 && is_hex(bare) {
            return Err(invalid(
                "a bare 64-character hex name is an image ID, not a name".into(),
            ));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                check_digest(digest).map_err(|r| invalid(r.into()))?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A colon after the last slash starts the tag (one before it is a registry port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let (name, tag) = rest.split_at(last_slash + i);
                let tag = &tag[1..];
                check_tag(tag).map_err(|r| invalid(r.into()))?;
                (name, Some(tag))
            }
            None => (rest, None),
        };
        if name.len() > 255 {
            return Err(invalid("name longer than 255 characters".into()));
        }
        let (registry, repository) = split_domain(name);
        if let Some(registry) = registry {
            check_domain(registry).map_err(|r| invalid(r.into()))?;
        }
        check_path(repository).map_err(|r| invalid(r.into()))?;
        let registry = match registry {
            None | Some("index.docker.io") => DOCKER_HUB,
            Some(other) => other,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        let tag = match (&digest, tag) {
            (Some(_), _) => None,
            (None, tag) => Some(tag.unwrap_or("latest").to_string()),
        };
        Ok(ImageRef {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The tagged form `name:tag`, if this reference has a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// The digested form `name@digest` for a given manifest digest.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The tag or digest part, as the registry's manifest endpoint wants it.
    pub fn tag_or_digest(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The same repository on another registry host (a mirror endpoint), in oci-client's type.
    pub fn at_host(&self, host: &str) -> Reference {
        match &self.digest {
            Some(d) => Reference::with_digest(host.into(), self.repository.clone(), d.clone()),
            None => Reference::with_tag(
                host.into(),
                self.repository.clone(),
                self.tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        }
    }

    /// The host that actually serves `registry` (Docker Hub's API lives elsewhere).
    pub fn upstream_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.tag, &self.digest) {
            (_, Some(d)) => write!(f, "{}@{d}", self.name()),
            (Some(t), None) => write!(f, "{}:{t}", self.name()),
            (None, None) => write!(f, "{}", self.name()),
        }
    }
}

/// Docker Hub's name in normalized references.
const DOCKER_HUB: &str = "docker.io";

/// Splits `name` into its registry (if the first component is one) and repository path. As in
/// Docker, the first component is a registry when it has a `.` or a `:`, or is `localhost`.
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first != first.to_lowercase() =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `host[:port]`: dot-separated labels of letters, digits and inner dashes, or `[IPv6]`.
fn check_domain(domain: &str) -> Result<(), &'static str> {
    let (host, port) = if let Some(bracketed) = domain.strip_prefix('[') {
        let (addr, rest) = bracketed
            .split_once(']')
            .ok_or("unclosed [ in the registry")?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| "invalid IPv6 registry address")?;
        if !rest.is_empty() && !rest.starts_with(':') {
            return Err("invalid registry after the IPv6 address");
        }
        (None, rest.strip_prefix(':'))
    } else {
        match domain.split_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(domain), None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("invalid registry port");
        }
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    match host {
        Some(host) if !host.split('.').all(label_ok) => Err("invalid registry name"),
        _ => Ok(()),
    }
}

/// Repository path components: lower-case letters and digits, joined by `.`, `_`, `__` or
/// runs of `-`.
fn check_path(path: &str) -> Result<(), &'static str> {
    for component in path.split('/') {
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("repository name must be lowercase");
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
            return Err("invalid repository path component");
        }
        // Between alphanumerics: one `.`, one or two `_`, or any number of `-`.
        for run in component.split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
            if !matches!(run, "" | "." | "_" | "__") && !run.bytes().all(|b| b == b'-') {
                return Err("invalid separator in the repository name");
            }
        }
    }
    Ok(())
}

/// A tag: a word character then up to 127 word characters, `.` or `-`.
fn check_tag(tag: &str) -> Result<(), &'static str> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    match tag.as_bytes() {
        [first, rest @ ..] if word(*first) && rest.len() <= 127 => {
            if rest.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
                Ok(())
            } else {
                Err("invalid character in the tag")
            }
        }
        [] => Err("empty tag"),
        _ => Err("invalid tag"),
    }
}

/// `algorithm:encoded`, e.g. `sha256:<64 hex>` (at least 32 hex digits, as distribution has it).
fn check_digest(digest: &str) -> Result<(), &'static str> {
    let (algorithm, encoded) = digest
        .split_once(':')
        .ok_or("digest without an algorithm")?;
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|c| {
        c.starts_with(|ch: char| ch.is_ascii_alphabetic())
            && c.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    if !algorithm_ok {
        return Err("invalid digest algorithm");
    }
    if encoded.len() < 32 || !encoded.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("invalid digest");
    }
    if algorithm == "sha256" && encoded.len() != 64 {
        return Err("a sha256 digest has 64 hex digits");
    }
    Ok(())
}

/// True when `s` is non-empty lower-case hexadecimal.
pub fn is_hex(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// If `input` looks like an image ID (`sha256:<64 hex>` or a hex prefix of at least 12), returns
/// the hex part. Names that merely contain hex digits are not IDs.
pub fn as_image_id(input: &str) -> Option<&str> {
    let hex = input.strip_prefix("sha256:").unwrap_or(input);
    let long_enough = if input.starts_with("sha256:") {
        hex.len() == 64
    } else {
        (12..=64).contains(&hex.len())
    };
    (long_enough && is_hex(hex)).then_some(hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_normalized_like_docker() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("user/app:1.0").unwrap();
        assert_eq!(r.to_string(), "docker.io/user/app:1.0");
        let r = ImageRef::parse("registry.k8s.io/e2e-test-images/busybox:1.29-2").unwrap();
        assert_eq!(r.registry, "registry.k8s.io");
        assert_eq!(r.repository, "e2e-test-images/busybox");
        assert_eq!(r.tag.as_deref(), Some("1.29-2"));
        let r = ImageRef::parse("127.0.0.1:5000/busybox").unwrap();
        assert_eq!(r.to_string(), "127.0.0.1:5000/busybox:latest");
    }

    #[test]
    fn a_digest_reference_has_no_tag() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("busybox:1.0@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{d}"));
    }

    #[test]
    fn registries_ports_and_separators() {
        let d = format!("sha256:{}", "0f".repeat(32));
        for (input, want) in [
            ("localhost/app", "localhost/app:latest"),
            ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
            ("index.docker.io/x", "docker.io/library/x:latest"),
            ("[::1]:5000/app:t", "[::1]:5000/app:t"),
            ("Registry.Example/app", "Registry.Example/app:latest"),
            ("a.b/c__d/e-f/g.h:1.0_rc-1", "a.b/c__d/e-f/g.h:1.0_rc-1"),
            ("my--app", "docker.io/library/my--app:latest"),
            (&format!("quay.io/a/b@{d}"), &format!("quay.io/a/b@{d}")),
        ] {
            assert_eq!(ImageRef::parse(input).unwrap().to_string(), want, "{input}");
        }
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in [
            "",
            " busybox",
            "Busybox",
            "busybox:",
            "a@sha256:12",
            &"b".repeat(64),
            "a//b",
            "a/-b",
            "a/b_",
            "a...b",
            "a___b",
            "a:-tag",
            &format!("a:{}", "t".repeat(129)),
            "-host.io/a",
            "host.io:/a",
            "host.io:x/a",
            "[::1/a",
            "[::1]x/a",
            "a@md5",
            &format!("a@sha256:{}", "g".repeat(64)),
            &format!("{}/a", "h".repeat(300)),
        ] {
            assert!(
                matches!(
                    ImageRef::parse(bad),
                    Err(ImageError::InvalidReference { .. })
                ),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn image_ids_are_recognized() {
        let hex = "0123456789abcdef".repeat(4);
        assert_eq!(as_image_id(&format!("sha256:{hex}")), Some(hex.as_str()));
        assert_eq!(as_image_id(&hex[..12]), Some(&hex[..12]));
        assert_eq!(as_image_id("busybox"), None);
        assert_eq!(as_image_id("sha256:abc"), None);
    }
}
