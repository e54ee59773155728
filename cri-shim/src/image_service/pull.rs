//! PullImage: resolve credentials, pull through the store, answer with the image ID.

use super::{image_name, Images};
use crate::error::CriError;
use skiff_proto::runtime::v1 as cri;
use skiff_runtime::image::RegistryAuth;

impl Images {
    pub(super) async fn pull(
        &self,
        request: cri::PullImageRequest,
    ) -> Result<cri::PullImageResponse, CriError> {
        let name = image_name(request.image.as_ref(), "image")?;
        let auth = registry_auth(request.auth.as_ref())?;
        let image = match self.store.pull(&name, &auth).await {
            Ok(image) => image,
            Err(e) => {
                // A failed pull leaves the store as it was: what it downloaded (the blob of a
                // rejected layer, the layers of an image that never got recorded) would
                // otherwise stay until the next removal or restart, even on a full disk.
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.discard_unused()).await {
                    Ok(Err(gc)) => tracing::warn!(error = %gc, "cleaning up after a failed pull"),
                    Err(join) => tracing::warn!(error = %join, "cleaning up after a failed pull"),
                    Ok(Ok(_)) => {}
                }
                return Err(e.into());
            }
        };
        // The pull code (registry client, TLS, decompression, unpacking) runs rarely, but its
        // pages and the heap it freed would stay with the daemon for good: give them back, so
        // skiffd's resident size is what the pod and container calls use. In the background:
        // the answer does not wait for it.
        tokio::task::spawn_blocking(release_pull_memory);
        // Like containerd, the image_ref a kubelet gets back is the image ID.
        Ok(cri::PullImageResponse {
            image_ref: image.id,
        })
    }
}

/// Returns the heap that a pull freed to the system and drops the daemon's clean code pages;
/// the next calls fault back in what they use.
fn release_pull_memory() {
    // SAFETY: malloc_trim only gives free heap memory back to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    skiff_monitor::pages::CleanPages::find().release();
}

/// Turns the CRI `AuthConfig` into registry credentials: explicit username/password first, then
/// the base64 `auth` field (`user:password`), then a registry token.
fn registry_auth(auth: Option<&cri::AuthConfig>) -> Result<RegistryAuth, CriError> {
    let Some(auth) = auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    if !auth.username.is_empty() {
        return Ok(RegistryAuth::Basic(
            auth.username.clone(),
            auth.password.clone(),
        ));
    }
    if !auth.auth.is_empty() {
        let decoded = decode_base64(&auth.auth)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| {
                CriError::InvalidArgument("auth.auth is not base64 of user:password".into())
            })?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| {
            CriError::InvalidArgument("auth.auth must decode to user:password".into())
        })?;
        return Ok(RegistryAuth::Basic(user.into(), password.into()));
    }
    if !auth.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(auth.registry_token.clone()));
    }
    if !auth.identity_token.is_empty() {
        return Err(CriError::InvalidArgument(
            "auth.identity_token (OAuth refresh tokens) is not supported; use username/password"
                .into(),
        ));
    }
    Ok(RegistryAuth::Anonymous)
}

/// Standard base64 (with or without padding), the encoding Docker uses for `auth`.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for byte in text.trim_end_matches('=').bytes() {
        let value = ALPHABET.iter().position(|&c| c == byte)? as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_config_forms_map_to_credentials() {
        let basic = cri::AuthConfig {
            auth: "dXNlcjpwYXNz".into(), // user:pass
            ..Default::default()
        };
        assert_eq!(
            registry_auth(Some(&basic)).unwrap(),
            RegistryAuth::Basic("user".into(), "pass".into())
        );
        let explicit = cri::AuthConfig {
            username: "a".into(),
            password: "b".into(),
            auth: "!!".into(),
            ..Default::default()
        };
        assert_eq!(
            registry_auth(Some(&explicit)).unwrap(),
            RegistryAuth::Basic("a".into(), "b".into())
        );
        let token = cri::AuthConfig {
            registry_token: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            registry_auth(Some(&token)).unwrap(),
            RegistryAuth::Bearer("t".into())
        );
        assert_eq!(registry_auth(None).unwrap(), RegistryAuth::Anonymous);
        let broken = cri::AuthConfig {
            auth: "not base64!".into(),
            ..Default::default()
        };
        assert!(matches!(
            registry_auth(Some(&broken)),
            Err(CriError::InvalidArgument(_))
        ));
    }
}
