//! skiff-routes: pods on different nodes reach each other by their own addresses, with no NAT
//! and no encapsulation, through plain routes (as flannel's host-gw mode or Calico's BGP mode
//! do): each node routes every other node's pod network through that node's address. The
//! agent runs on each node, watches the Node objects and keeps the kernel's routes in step.
//!
//! [`desired`] turns the Node objects into routes, [`apply`] makes the kernel match them.

pub mod apply;
pub mod desired;
