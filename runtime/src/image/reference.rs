//! Image references, normalized as containerd and Docker do.
//!
//! `busybox` becomes `docker.io/library/busybox:latest`; a reference with a digest keeps only the
//! digest (a pull by digest records no tag).

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
        let parsed: Reference = input.parse().map_err(|e| invalid(format!("{e}")))?;
        let digest = parsed.digest().map(str::to_string);
        let tag = if digest.is_some() {
            None
        } else {
            parsed.tag().map(str::to_string)
        };
        Ok(ImageRef {
            registry: parsed.registry().to_string(),
            repository: parsed.repository().to_string(),
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
    fn bad_references_are_refused() {
        for bad in [
            "",
            " busybox",
            "Busybox",
            "busybox:",
            "a@sha256:12",
            &"b".repeat(64),
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
