//! Build OCI image-layout directories (what `skopeo` reads as `oci:DIR:TAG`) from Rust.
//!
//! An [`ImageSpec`] describes one image: its layers (entries or raw tar bytes, each with its
//! own compression) and its config. [`ImageSpec::write`] stores it in a layout under a tag;
//! [`write_index`] stores several platform images under one image index. Output is
//! deterministic (fixed timestamps), so the same spec always yields the same digests.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// Media type of an OCI image index.
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of an OCI image manifest.
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a Docker v2 schema 2 manifest.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of a Docker v2 schema 2 manifest list.
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Annotation that names a tag in a layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Fixed creation time: reproducible digests let caches and tests compare images.
const CREATED: &str = "2024-01-01T00:00:00Z";
/// [`CREATED`] as the Unix time stamped on every tar entry.
const MTIME: u64 = 1_704_067_200;

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// `tar+gzip`, what nearly every registry image uses.
    #[default]
    Gzip,
    /// `tar+zstd`.
    Zstd,
    /// A plain tar.
    None,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
        }
    }

    fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Compression::Gzip => {
                // GzEncoder writes mtime 0 and no file name, so output is reproducible.
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(tar)?;
                enc.finish()?
            }
            Compression::Zstd => zstd::encode_all(tar, 3)?,
            Compression::None => tar.to_vec(),
        })
    }
}

/// What a layer entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file with this content.
    File(Vec<u8>),
    /// A symbolic link to this target (stored verbatim).
    Symlink(String),
    /// A hard link to this other path of the same layer (or a lower one).
    Hardlink(String),
}

/// One well-formed entry of a layer. Paths may start with `/`; it is stripped in the tar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Path inside the image, e.g. `/etc/passwd`.
    pub path: String,
    /// Type and payload.
    pub kind: EntryKind,
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
}

impl Entry {
    fn new(path: &str, kind: EntryKind, mode: u32) -> Self {
        Entry {
            path: path.to_string(),
            kind,
            mode,
            uid: 0,
            gid: 0,
        }
    }

    /// A directory owned by root.
    pub fn dir(path: &str, mode: u32) -> Self {
        Self::new(path, EntryKind::Dir, mode)
    }

    /// A regular file owned by root.
    pub fn file(path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        Self::new(path, EntryKind::File(content.into()), mode)
    }

    /// A symbolic link.
    pub fn symlink(path: &str, target: &str) -> Self {
        Self::new(path, EntryKind::Symlink(target.to_string()), 0o777)
    }

    /// A hard link to `target`, another path inside the image.
    pub fn hardlink(path: &str, target: &str) -> Self {
        let target = target.trim_start_matches('/').to_string();
        Self::new(path, EntryKind::Hardlink(target), 0o644)
    }

    /// Sets the owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }

    fn to_raw(&self) -> RawEntry {
        let name = self.path.trim_start_matches('/');
        let raw = match &self.kind {
            // Directory names end in `/` by tar convention.
            EntryKind::Dir => RawEntry::dir(format!("{}/", name.trim_end_matches('/'))),
            EntryKind::File(data) => RawEntry::file(name, data.clone()),
            EntryKind::Symlink(target) => RawEntry::symlink(name, target.as_str()),
            EntryKind::Hardlink(target) => RawEntry::hardlink(name, target.as_str()),
        };
        raw.mode(self.mode).owner(self.uid, self.gid)
    }
}

/// The uncompressed content of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerContent {
    /// Well-formed entries, written in order.
    Entries(Vec<Entry>),
    /// A complete tar archive, used verbatim (for hostile layers, see [`raw_tar`]).
    RawTar(Vec<u8>),
    /// A blob already compressed (as the layer's [`Compression`] says), with the DiffID to
    /// put in the config: for streams too big to build uncompressed, such as gzip bombs.
    Compressed {
        /// The layer blob as pushed.
        blob: Vec<u8>,
        /// `rootfs.diff_ids` entry for it.
        diff_id: String,
    },
}

/// One layer: content plus compression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// What the uncompressed tar holds.
    pub content: LayerContent,
    /// How the blob is compressed.
    pub compression: Compression,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    /// An empty gzip layer to add entries to.
    pub fn new() -> Self {
        Layer {
            content: LayerContent::Entries(Vec::new()),
            compression: Compression::Gzip,
        }
    }

    /// A gzip layer whose uncompressed tar is exactly `tar`.
    pub fn raw(tar: Vec<u8>) -> Self {
        Layer {
            content: LayerContent::RawTar(tar),
            compression: Compression::Gzip,
        }
    }

    /// A layer whose blob is `blob`, already compressed with `compression`, recorded in the
    /// config with `diff_id`.
    pub fn precompressed(blob: Vec<u8>, diff_id: String, compression: Compression) -> Self {
        Layer {
            content: LayerContent::Compressed { blob, diff_id },
            compression,
        }
    }

    /// Sets the compression.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Appends an entry.
    ///
    /// # Panics
    /// On a [`Layer::raw`] layer, whose bytes are fixed.
    pub fn entry(mut self, entry: Entry) -> Self {
        match &mut self.content {
            LayerContent::Entries(entries) => entries.push(entry),
            LayerContent::RawTar(_) | LayerContent::Compressed { .. } => {
                panic!("cannot add entries to a raw tar layer")
            }
        }
        self
    }

    /// Appends a directory owned by root.
    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(Entry::dir(path, mode))
    }

    /// Appends a regular file owned by root.
    pub fn file(self, path: &str, content: impl Into<Vec<u8>>, mode: u32) -> Self {
        self.entry(Entry::file(path, content, mode))
    }

    /// Appends a symbolic link.
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(Entry::symlink(path, target))
    }

    /// Appends a hard link.
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(Entry::hardlink(path, target))
    }

    /// The uncompressed tar archive of this layer (`None` for a precompressed layer).
    pub fn tar_bytes(&self) -> Option<Vec<u8>> {
        match &self.content {
            LayerContent::Entries(entries) => Some(raw_tar(
                &entries.iter().map(Entry::to_raw).collect::<Vec<_>>(),
            )),
            LayerContent::RawTar(tar) => Some(tar.clone()),
            LayerContent::Compressed { .. } => None,
        }
    }

    /// The blob to push and its DiffID.
    fn blob_and_diff_id(&self) -> Result<(Vec<u8>, String)> {
        match (&self.content, self.tar_bytes()) {
            (LayerContent::Compressed { blob, diff_id }, _) => Ok((blob.clone(), diff_id.clone())),
            (_, Some(tar)) => Ok((self.compression.compress(&tar)?, sha256_digest(&tar))),
            (_, None) => bail!("layer without content"),
        }
    }
}

/// A tar entry written byte for byte, without the checks of the `tar` crate's safe setters:
/// names and link targets may be absolute, contain `..`, NUL-free garbage, anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawEntry {
    /// Name bytes as stored (longer than 100 bytes uses a GNU long-name record).
    pub name: Vec<u8>,
    /// Tar type flag.
    pub entry_type: EntryType,
    /// Link target bytes (symlinks and hard links).
    pub link: Vec<u8>,
    /// File content; its length is the header size.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner uid.
    pub uid: u64,
    /// Owner gid.
    pub gid: u64,
    /// Major and minor number (character and block devices).
    pub device: (u32, u32),
}

impl RawEntry {
    /// An entry of any type, mode 0644, owned by root, with no link and no data.
    pub fn new(entry_type: EntryType, name: impl Into<Vec<u8>>) -> Self {
        RawEntry {
            name: name.into(),
            entry_type,
            link: Vec::new(),
            data: Vec::new(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            device: (0, 0),
        }
    }

    /// A character or block device node (`entry_type` Char or Block).
    pub fn device(entry_type: EntryType, name: impl Into<Vec<u8>>, major: u32, minor: u32) -> Self {
        let mut entry = Self::new(entry_type, name).mode(0o666);
        entry.device = (major, minor);
        entry
    }

    /// A regular file.
    pub fn file(name: impl Into<Vec<u8>>, data: impl Into<Vec<u8>>) -> Self {
        Self::new(EntryType::Regular, name).data(data)
    }

    /// A directory (mode 0755).
    pub fn dir(name: impl Into<Vec<u8>>) -> Self {
        Self::new(EntryType::Directory, name).mode(0o755)
    }

    /// A symbolic link.
    pub fn symlink(name: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Self {
        Self::new(EntryType::Symlink, name).link(target).mode(0o777)
    }

    /// A hard link.
    pub fn hardlink(name: impl Into<Vec<u8>>, target: impl Into<Vec<u8>>) -> Self {
        Self::new(EntryType::Link, name).link(target)
    }

    /// Sets the link target.
    pub fn link(mut self, target: impl Into<Vec<u8>>) -> Self {
        self.link = target.into();
        self
    }

    /// Sets the content.
    pub fn data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }

    /// Sets the permission bits.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
}

/// Writes `entries` as a complete tar archive, storing names and link targets verbatim.
pub fn raw_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if e.name.len() > 100 {
            append_long(&mut out, EntryType::GNULongName, &e.name);
        }
        if e.link.len() > 100 {
            append_long(&mut out, EntryType::GNULongLink, &e.link);
        }
        let mut header = Header::new_gnu();
        header.set_entry_type(e.entry_type);
        header.set_mode(e.mode);
        header.set_uid(e.uid);
        header.set_gid(e.gid);
        header.set_mtime(MTIME);
        header.set_size(e.data.len() as u64);
        if matches!(e.entry_type, EntryType::Char | EntryType::Block) {
            header
                .set_device_major(e.device.0)
                .expect("GNU headers have device fields");
            header
                .set_device_minor(e.device.1)
                .expect("GNU headers have device fields");
        }
        // Fill the fields directly: `set_path`/`set_link_name` reject `..` and absolute paths.
        let old = header.as_old_mut();
        copy_field(&mut old.name, &e.name);
        copy_field(&mut old.linkname, &e.link);
        header.set_cksum();
        append_record(&mut out, &header, &e.data);
    }
    // Two zero blocks end the archive.
    out.resize(out.len() + 1024, 0);
    out
}

/// A GNU `././@LongLink` record carrying a name or link target longer than 100 bytes.
fn append_long(out: &mut Vec<u8>, kind: EntryType, value: &[u8]) {
    let mut data = value.to_vec();
    data.push(0);
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    copy_field(&mut header.as_old_mut().name, b"././@LongLink");
    header.set_cksum();
    append_record(out, &header, &data);
}

fn append_record(out: &mut Vec<u8>, header: &Header, data: &[u8]) {
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    let padded = data.len().div_ceil(512) * 512;
    out.resize(out.len() + padded - data.len(), 0);
}

/// Copies as much of `value` as fits; the rest travels in a long-name record.
fn copy_field(field: &mut [u8], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// One image: layers and config. Build with the chained setters, then [`ImageSpec::write`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSpec {
    /// Layers, lowest first.
    pub layers: Vec<Layer>,
    /// Config `User`.
    pub user: Option<String>,
    /// Config `Env`, `KEY=VALUE` each.
    pub env: Vec<String>,
    /// Config `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// Config `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// Config `WorkingDir`.
    pub working_dir: Option<String>,
    /// Config `Labels`.
    pub labels: BTreeMap<String, String>,
    /// Platform architecture, `amd64` unless set.
    pub architecture: String,
    /// Platform OS, `linux` unless set.
    pub os: String,
}

impl Default for ImageSpec {
    fn default() -> Self {
        ImageSpec {
            layers: Vec::new(),
            user: None,
            env: Vec::new(),
            entrypoint: None,
            cmd: None,
            working_dir: None,
            labels: BTreeMap::new(),
            architecture: "amd64".to_string(),
            os: "linux".to_string(),
        }
    }
}

/// Digests of an image written to a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDigests {
    /// Manifest digest, `sha256:…`.
    pub manifest: String,
    /// Manifest size in bytes.
    pub manifest_size: u64,
    /// Config digest, which is the image ID.
    pub config: String,
    /// Layer blob digests (compressed), lowest first.
    pub layers: Vec<String>,
    /// Digests of the uncompressed layer tars (`rootfs.diff_ids`).
    pub diff_ids: Vec<String>,
}

/// Digests of a multi-platform image written to a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDigests {
    /// Image index digest (what the tag points to).
    pub index: String,
    /// Each platform image, in the order given.
    pub images: Vec<ImageDigests>,
}

impl ImageSpec {
    /// An empty linux/amd64 image.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a layer.
    pub fn layer(mut self, layer: Layer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Sets `User` (a name or `uid[:gid]`).
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }

    /// Appends `KEY=VALUE` to `Env`.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push(format!("{key}={value}"));
        self
    }

    /// Sets `Entrypoint`.
    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Sets `Cmd`.
    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = Some(args.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Sets `WorkingDir`.
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.to_string());
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// Sets the platform architecture (`amd64`, `arm64`, …).
    pub fn architecture(mut self, arch: &str) -> Self {
        self.architecture = arch.to_string();
        self
    }

    /// Writes the image into the layout at `dir` (created if missing) and points `tag` at it,
    /// replacing an earlier image of the same tag.
    pub fn write(&self, dir: &Path, tag: &str) -> Result<ImageDigests> {
        init_layout(dir)?;
        let digests = self.write_blobs(dir)?;
        let descriptor = json!({
            "mediaType": MEDIA_TYPE_MANIFEST,
            "digest": digests.manifest,
            "size": digests.manifest_size,
        });
        set_tag(dir, tag, descriptor)?;
        Ok(digests)
    }

    /// Writes layers, config and manifest as blobs, without tagging.
    fn write_blobs(&self, dir: &Path) -> Result<ImageDigests> {
        let mut layer_descriptors = Vec::new();
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in &self.layers {
            let (blob, diff_id) = layer.blob_and_diff_id()?;
            diff_ids.push(diff_id);
            let digest = write_blob(dir, &blob)?;
            layer_descriptors.push(json!({
                "mediaType": layer.compression.media_type(),
                "digest": digest,
                "size": blob.len(),
            }));
            layers.push(digest);
        }

        let config = serde_json::to_vec(&self.config_json(&diff_ids))?;
        let config_digest = write_blob(dir, &config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_MANIFEST,
            "config": {
                "mediaType": MEDIA_TYPE_CONFIG,
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layer_descriptors,
        }))?;
        Ok(ImageDigests {
            manifest: write_blob(dir, &manifest)?,
            manifest_size: manifest.len() as u64,
            config: config_digest,
            layers,
            diff_ids,
        })
    }

    fn config_json(&self, diff_ids: &[String]) -> Value {
        let mut config = serde_json::Map::new();
        if let Some(user) = &self.user {
            config.insert("User".into(), json!(user));
        }
        if !self.env.is_empty() {
            config.insert("Env".into(), json!(self.env));
        }
        if let Some(entrypoint) = &self.entrypoint {
            config.insert("Entrypoint".into(), json!(entrypoint));
        }
        if let Some(cmd) = &self.cmd {
            config.insert("Cmd".into(), json!(cmd));
        }
        if let Some(dir) = &self.working_dir {
            config.insert("WorkingDir".into(), json!(dir));
        }
        if !self.labels.is_empty() {
            config.insert("Labels".into(), json!(self.labels));
        }
        let history: Vec<Value> = (0..diff_ids.len())
            .map(|i| json!({ "created": CREATED, "created_by": format!("skiff-tests layer {i}") }))
            .collect();
        json!({
            "created": CREATED,
            "architecture": self.architecture,
            "os": self.os,
            "config": config,
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": history,
        })
    }
}

/// Writes each image and an image index over them into the layout at `dir`, and points `tag`
/// at the index. Each image's platform comes from its `architecture` and `os`.
pub fn write_index(dir: &Path, tag: &str, images: &[ImageSpec]) -> Result<IndexDigests> {
    init_layout(dir)?;
    let mut all = Vec::new();
    let mut manifests = Vec::new();
    for image in images {
        let digests = image.write_blobs(dir)?;
        manifests.push(json!({
            "mediaType": MEDIA_TYPE_MANIFEST,
            "digest": digests.manifest,
            "size": digests.manifest_size,
            "platform": { "architecture": image.architecture, "os": image.os },
        }));
        all.push(digests);
    }
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": manifests,
    }))?;
    let digest = write_blob(dir, &index)?;
    let descriptor = json!({
        "mediaType": MEDIA_TYPE_INDEX,
        "digest": digest,
        "size": index.len(),
    });
    set_tag(dir, tag, descriptor)?;
    Ok(IndexDigests {
        index: digest,
        images: all,
    })
}

/// The digest that `tag` points to in the layout at `dir`.
pub fn resolve_tag(dir: &Path, tag: &str) -> Result<String> {
    let index = read_index(dir)?;
    for m in index["manifests"].as_array().into_iter().flatten() {
        if m["annotations"][REF_NAME_ANNOTATION] == tag {
            if let Some(digest) = m["digest"].as_str() {
                return Ok(digest.to_string());
            }
        }
    }
    bail!("tag {tag} not found in {}", dir.display())
}

/// Reads a blob of the layout at `dir`.
pub fn read_blob(dir: &Path, digest: &str) -> Result<Vec<u8>> {
    let path = blob_path(dir, digest)?;
    fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn blob_path(dir: &Path, digest: &str) -> Result<std::path::PathBuf> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("unsupported digest {digest}");
    };
    Ok(dir.join("blobs/sha256").join(hex))
}

fn init_layout(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir.join("blobs/sha256"))
        .with_context(|| format!("creating layout {}", dir.display()))?;
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    if !dir.join("index.json").exists() {
        write_index_json(dir, &[])?;
    }
    Ok(())
}

fn write_blob(dir: &Path, bytes: &[u8]) -> Result<String> {
    let digest = sha256_digest(bytes);
    let path = blob_path(dir, &digest)?;
    if !path.exists() {
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(digest)
}

fn read_index(dir: &Path) -> Result<Value> {
    let path = dir.join("index.json");
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// Points `tag` at `descriptor` in `index.json`, dropping whatever it pointed to before.
fn set_tag(dir: &Path, tag: &str, mut descriptor: Value) -> Result<()> {
    let index = read_index(dir)?;
    let mut manifests: Vec<Value> = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["annotations"][REF_NAME_ANNOTATION] != tag)
        .cloned()
        .collect();
    descriptor["annotations"] = json!({ REF_NAME_ANNOTATION: tag });
    manifests.push(descriptor);
    write_index_json(dir, &manifests)
}

fn write_index_json(dir: &Path, manifests: &[Value]) -> Result<()> {
    let index = json!({
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE_INDEX,
        "manifests": manifests,
    });
    // Rename into place so a reader never sees a half-written index.
    let tmp = dir.join("index.json.tmp");
    fs::write(&tmp, serde_json::to_vec(&index)?)?;
    fs::rename(&tmp, dir.join("index.json"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Reads an archive back with the `tar` crate, which resolves GNU long-name records.
    fn read_back(tar: &[u8]) -> Vec<RawEntry> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                RawEntry {
                    name: e.path_bytes().into_owned(),
                    entry_type: h.entry_type(),
                    link: e.link_name_bytes().unwrap_or_default().into_owned(),
                    data,
                    mode: h.mode().unwrap(),
                    uid: h.uid().unwrap(),
                    gid: h.gid().unwrap(),
                    // Only device entries carry numbers (the fields may be blank otherwise).
                    device: match h.entry_type() {
                        EntryType::Char | EntryType::Block => (
                            h.device_major().unwrap().unwrap_or(0),
                            h.device_minor().unwrap().unwrap_or(0),
                        ),
                        _ => (0, 0),
                    },
                }
            })
            .collect()
    }

    #[test]
    fn raw_tar_keeps_hostile_names() {
        let long = format!("a/{}", "b".repeat(150));
        let entries = vec![
            RawEntry::file("../../etc/evil", "x").mode(0o4755),
            RawEntry::symlink("/abs/link", "../../../../"),
            RawEntry::hardlink("h", "/etc/shadow").owner(7, 8),
            RawEntry::file(long.as_str(), "long"),
            RawEntry::symlink("l", long.as_str()),
            RawEntry::new(EntryType::Char, "dev/null"),
        ];
        assert_eq!(read_back(&raw_tar(&entries)), entries);
    }

    #[test]
    fn layer_entries_round_trip() {
        let layer = Layer::new()
            .dir("/tmp", 0o1777)
            .file("/etc/passwd", "root:x:0:0::/root:/bin/sh\n", 0o644)
            .symlink("/bin/sh", "busybox")
            .hardlink("/bin/ln", "/bin/busybox")
            .entry(Entry::dir("/home/skiff", 0o755).owner(1000, 1000));
        let tar = layer.tar_bytes().unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let headers: Vec<_> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.mode().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect();
        assert_eq!(headers[0], ("tmp/".to_string(), 0o1777, 0));
        assert_eq!(headers[1].0, "etc/passwd");
        assert_eq!(headers[3].0, "bin/ln");
        assert_eq!(headers[4], ("home/skiff/".to_string(), 0o755, 1000));
    }

    #[test]
    fn write_records_diff_ids_and_tag() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ImageSpec::new()
            .layer(Layer::new().file("/a", "a", 0o644))
            .layer(
                Layer::new()
                    .file("/b", "b", 0o644)
                    .compression(Compression::Zstd),
            )
            .layer(Layer::raw(raw_tar(&[RawEntry::file("c", "c")])).compression(Compression::None))
            .user("1000")
            .cmd(&["sh"]);
        let d = spec.write(dir.path(), "v1").unwrap();
        assert_eq!(resolve_tag(dir.path(), "v1").unwrap(), d.manifest);
        // Writing the same spec again is reproducible.
        assert_eq!(spec.write(dir.path(), "v2").unwrap(), d);

        let config: Value =
            serde_json::from_slice(&read_blob(dir.path(), &d.config).unwrap()).unwrap();
        assert_eq!(config["config"]["User"], "1000");
        for (i, layer) in spec.layers.iter().enumerate() {
            let diff_id = sha256_digest(&layer.tar_bytes().unwrap());
            assert_eq!(config["rootfs"]["diff_ids"][i], diff_id.as_str());
            assert_eq!(d.diff_ids[i], diff_id);
        }
        let zstd_blob = read_blob(dir.path(), &d.layers[1]).unwrap();
        let tar = zstd::decode_all(&zstd_blob[..]).unwrap();
        assert_eq!(sha256_digest(&tar), d.diff_ids[1]);

        let manifest: Value =
            serde_json::from_slice(&read_blob(dir.path(), &d.manifest).unwrap()).unwrap();
        assert_eq!(
            manifest["layers"][0]["mediaType"],
            Compression::Gzip.media_type()
        );
        assert_eq!(
            manifest["layers"][1]["mediaType"],
            Compression::Zstd.media_type()
        );
        assert_eq!(
            manifest["layers"][2]["mediaType"],
            Compression::None.media_type()
        );

        let index = read_index(dir.path()).unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    }
}

/// A gzip stream of `prefix`, then `zeros` zero bytes, then `suffix`, built without ever
/// holding (or compressing) the zeros: one MiB of zeros is deflated once, as a self-contained
/// run of blocks ending on a byte boundary, and repeated. Gigabytes of zeros become a few MB.
pub fn gzip_with_zeros(prefix: &[u8], zeros: u64, suffix: &[u8]) -> Result<Vec<u8>> {
    const CHUNK: u64 = 1 << 20;
    let chunk = vec![0u8; CHUNK as usize];
    let deflated_chunk = deflate_segment(&chunk, false)?;
    let mut crc = flate2::Crc::new();
    let mut chunk_crc = flate2::Crc::new();
    chunk_crc.update(&chunk);

    // Fixed header: no name, mtime 0, OS unknown.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    out.extend(deflate_segment(prefix, false)?);
    crc.update(prefix);
    for _ in 0..zeros / CHUNK {
        out.extend_from_slice(&deflated_chunk);
        crc.combine(&chunk_crc);
    }
    let rest = &chunk[..(zeros % CHUNK) as usize];
    out.extend(deflate_segment(rest, false)?);
    crc.update(rest);
    out.extend(deflate_segment(suffix, true)?);
    crc.update(suffix);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32, as RFC 1952 defines it.
    let total = prefix.len() as u64 + zeros + suffix.len() as u64;
    out.extend_from_slice(&(total as u32).to_le_bytes());
    Ok(out)
}

/// Raw deflate of `input` by a fresh compressor: a full flush (byte-aligned, no reference to
/// anything before) or, if `last`, the final block.
fn deflate_segment(input: &[u8], last: bool) -> Result<Vec<u8>> {
    use flate2::{Compress, FlushCompress, Status};
    let mut compress = Compress::new(flate2::Compression::best(), false);
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Full
    };
    let mut out = Vec::with_capacity(input.len() / 64 + 1024);
    loop {
        let consumed = compress.total_in() as usize;
        let status = compress.compress_vec(&input[consumed..], &mut out, flush)?;
        let all_in = compress.total_in() as usize == input.len();
        let done = if last {
            status == Status::StreamEnd
        } else {
            all_in && out.len() < out.capacity()
        };
        if done {
            return Ok(out);
        }
        out.reserve(64 * 1024);
    }
}

/// A tar header (GNU format) for a regular file `name` of `size` bytes, mode 0644, root-owned.
pub fn file_header(name: &str, size: u64) -> Vec<u8> {
    let mut header = Header::new_gnu();
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_size(size);
    copy_field(&mut header.as_old_mut().name, name.as_bytes());
    header.set_cksum();
    header.as_bytes().to_vec()
}

#[cfg(test)]
mod gzip_tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn zeros_spliced_into_gzip_decompress_to_the_exact_stream() {
        let prefix = b"head".to_vec();
        let zeros = (3 << 20) + 1234;
        let blob = gzip_with_zeros(&prefix, zeros, b"tail").unwrap();
        assert!(blob.len() < 20_000, "{} bytes", blob.len());
        let mut plain = Vec::new();
        // The decoder checks the CRC and ISIZE trailer too.
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut plain)
            .unwrap();
        let mut expected = prefix;
        expected.resize(expected.len() + zeros as usize, 0);
        expected.extend_from_slice(b"tail");
        assert_eq!(plain, expected);
    }
}
