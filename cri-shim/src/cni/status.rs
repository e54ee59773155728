//! STATUS: is the network ready for ADD? The config must load, every plugin must be found and
//! agree on a version, and, from spec 1.1.0 on, every plugin must answer STATUS successfully.

use super::exec::Invocation;
use super::request::{self, Purpose};
use super::version::at_least;
use super::{Cni, CniError};

impl Cni {
    /// Ok if the network of the conf dir can serve ADD now; otherwise why not.
    pub async fn status(&self) -> Result<(), CniError> {
        let (_, list) = self.current_list()?;
        let plugins = self.resolve(&list.name, &list.plugins)?;
        let version = self.negotiate(&list, &plugins).await?;
        // Plugins of older versions have no STATUS verb.
        if !at_least(&version, "1.1.0") {
            return Ok(());
        }
        for plugin in &plugins {
            let req = request::derive(&plugin.conf, &list.name, &version, Purpose::Status);
            self.exec(plugin, Invocation::bare("STATUS"), &req).await?;
        }
        Ok(())
    }
}
