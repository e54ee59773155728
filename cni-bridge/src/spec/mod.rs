//! Types of the CNI specification (1.1.0 and the older result versions it must
//! still speak): versions, error codes, the environment a runtime passes, the
//! plugin configuration's well-known fields and the result object.

mod env;
mod error;
mod ipnet;
mod netconf;
mod result;
mod version;

pub use env::{valid_container_id, valid_ifname, Command, EnvError, Environment};
pub use error::{CniError, ErrorCode};
pub use ipnet::{from_u128, to_u128, IpNet, IpNetError};
pub use netconf::{parse_config, Attachment, Dns, PortMapping, RuntimeConfig};
pub use result::{CniResult, Interface, IpConfig, ResultError, Route};
pub use version::{CniVersion, SUPPORTED_VERSIONS};
