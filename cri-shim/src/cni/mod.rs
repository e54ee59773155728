//! Pod networking through CNI plugins (libcni's role). For now: finding the network config that
//! decides the NetworkReady condition.

mod conf;

pub use conf::find_network;
