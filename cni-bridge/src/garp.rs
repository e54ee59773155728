//! Gratuitous ARP: telling the bridge's hosts which MAC a new IPv4 address has.
//!
//! An address the IPAM hands out again after a DEL belonged to another veth, with
//! another MAC. Hosts and pods that talked to the old pod keep that MAC in their
//! neighbor tables until the entry goes stale and is probed again, seconds later.
//! A gratuitous ARP request (sender and target address both the pod's) makes
//! every neighbor that still has an entry for the address take the new MAC at
//! once. `arp_notify` cannot do it here: it fires when the link comes up, and
//! ADD brings the link up before it has addresses.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// ARP over Ethernet, IPv4: hardware type, protocol, their lengths, "request".
const ARP_HEADER: [u8; 8] = [0, 1, 0x08, 0x00, 6, 4, 0, 1];
const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];

/// A packet socket of the namespace it was opened in; it only sends.
pub struct Announcer(OwnedFd);

impl Announcer {
    /// Opens the socket. Call it on a thread inside the container's netns: a
    /// packet socket sends through the interfaces of the namespace it was made in.
    pub fn open() -> io::Result<Announcer> {
        // Protocol 0: the socket receives nothing, so nothing queues up on it.
        // SAFETY: plain socket(2); the fd is owned right below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(Announcer(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Broadcasts one gratuitous ARP request for `ip` from `mac` out of
    /// interface `ifindex`.
    pub fn announce(&self, ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
        let packet = request(mac, ip);
        // SAFETY: an all-zero sockaddr_ll is valid; the fields that matter follow.
        let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_protocol = ETH_P_ARP.to_be();
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&BROADCAST);
        // SAFETY: the buffer and address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The ARP payload (the kernel adds the Ethernet header): sender and target
/// protocol address are both `ip`, target hardware address unknown (zero).
fn request(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut packet = [0u8; 28];
    packet[..8].copy_from_slice(&ARP_HEADER);
    packet[8..14].copy_from_slice(&mac);
    packet[14..18].copy_from_slice(&ip.octets());
    packet[24..28].copy_from_slice(&ip.octets());
    packet
}

/// Parses "aa:bb:cc:dd:ee:ff".
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_the_address_as_sender_and_target() {
        let mac = [0x0a, 0x58, 1, 2, 3, 4];
        let packet = request(mac, Ipv4Addr::new(10, 1, 2, 3));
        assert_eq!(
            packet,
            [
                0, 1, 8, 0, 6, 4, 0, 1, // Ethernet, IPv4, request
                0x0a, 0x58, 1, 2, 3, 4, 10, 1, 2, 3, // sender
                0, 0, 0, 0, 0, 0, 10, 1, 2, 3, // target
            ]
        );
    }

    #[test]
    fn macs_parse_only_when_well_formed() {
        assert_eq!(
            parse_mac("0a:58:ff:00:1b:2c"),
            Some([0x0a, 0x58, 0xff, 0, 0x1b, 0x2c])
        );
        for bad in [
            "",
            "0a:58:ff:00:1b",
            "0a:58:ff:00:1b:2c:3d",
            "0a:58:ff:00:1b:zz",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
