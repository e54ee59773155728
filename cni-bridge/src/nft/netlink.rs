//! Just enough nfnetlink to drive nf_tables: one `NETLINK_NETFILTER` socket,
//! the few messages we send (table, chain and rule creation and deletion,
//! table/chain/rule listing, the generation), batches, and the decoding of
//! the replies we read. The same socket lists and deletes conntrack entries.
//!
//! Numbers come from the kernel's uapi headers: `linux/netlink.h`,
//! `linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`,
//! `linux/netfilter/nfnetlink_conntrack.h`.

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket as RawSocket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use std::io;

use super::expr;
use super::{Chain, NftError, Rule, RuleRef, TABLE};

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_DUMP_INTR: u16 = 0x10;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 1 << 15;
const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | 1 << 14);

// linux/netfilter/nfnetlink.h (and struct nfgenmsg's size)
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNETLINK_V0: u8 = 0;
const NFGENMSG_LEN: usize = 4;
/// linux/netfilter.h: every message is about our `inet` table.
const NFPROTO_INET: u8 = 1;
/// linux/netfilter.h: a base chain's policy.
const NF_ACCEPT: u32 = 1;

// nf_tables.h: enum nf_tables_msg_types
const NFT_MSG_NEWTABLE: u8 = 0;
const NFT_MSG_GETTABLE: u8 = 1;
const NFT_MSG_DELTABLE: u8 = 2;
const NFT_MSG_NEWCHAIN: u8 = 3;
const NFT_MSG_GETCHAIN: u8 = 4;
const NFT_MSG_DELCHAIN: u8 = 5;
const NFT_MSG_NEWRULE: u8 = 6;
const NFT_MSG_GETRULE: u8 = 7;
const NFT_MSG_DELRULE: u8 = 8;
const NFT_MSG_GETGEN: u8 = 16;

// linux/netfilter/nfnetlink_conntrack.h: enum cntl_msg_types
const IPCTNL_MSG_CT_GET: u8 = 1;
const IPCTNL_MSG_CT_DELETE: u8 = 2;

// nf_tables.h: table, chain, hook and rule attributes
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;

/// libnftnl's rule userdata type for a comment (`NFTNL_UDATA_RULE_COMMENT`),
/// which `nft` reads back as `comment "…"`.
const UDATA_RULE_COMMENT: u8 = 0;

/// How long to wait for the kernel's answer. It answers while handling our
/// `send`, so this only bounds a reply that will never come.
const REPLY_TIMEOUT_SECS: i64 = 5;
/// Receive buffer: the kernel fills dump datagrams up to 32 KiB.
const RECV_BUF: usize = 64 * 1024;

/// Netlink attributes being built: each is (length, type, value), padded to
/// 4 bytes. Integers are big-endian, as nf_tables expects.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attrs(Vec<u8>);

impl Attrs {
    /// No attributes.
    pub fn new() -> Attrs {
        Attrs::default()
    }

    /// Adds an attribute holding `value` as is.
    pub fn bytes(mut self, kind: u16, value: &[u8]) -> Attrs {
        self.put(kind, value);
        self
    }

    /// Adds a NUL-terminated string.
    pub fn str(mut self, kind: u16, value: &str) -> Attrs {
        let mut v = Vec::with_capacity(value.len() + 1);
        v.extend_from_slice(value.as_bytes());
        v.push(0);
        self.put(kind, &v);
        self
    }

    /// Adds a big-endian u32.
    pub fn u32(self, kind: u16, value: u32) -> Attrs {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// Adds a big-endian u64.
    pub fn u64(self, kind: u16, value: u64) -> Attrs {
        self.bytes(kind, &value.to_be_bytes())
    }

    /// Adds an attribute holding `inner`.
    pub fn nested(self, kind: u16, inner: Attrs) -> Attrs {
        self.nested_bytes(kind, &inner.0)
    }

    /// Adds an attribute holding attributes already encoded (as read back).
    pub fn nested_bytes(mut self, kind: u16, inner: &[u8]) -> Attrs {
        self.put(kind | NLA_F_NESTED, inner);
        self
    }

    /// The encoded bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn put(&mut self, kind: u16, value: &[u8]) {
        // Values of ours are short (names, addresses, one rule's
        // expressions); a length that does not fit would be refused by the
        // kernel as malformed, never misread.
        let len = u16::try_from(NLA_HDRLEN + value.len()).unwrap_or(u16::MAX);
        self.0.extend_from_slice(&len.to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(align4(self.0.len()), 0);
    }
}

fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// Iterates over the attributes in `buf` as (type, value); stops at the
/// first malformed one.
pub fn parse_attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes([*buf.first()?, *buf.get(1)?]));
        let kind = u16::from_ne_bytes([*buf.get(2)?, *buf.get(3)?]) & NLA_TYPE_MASK;
        let value = buf.get(NLA_HDRLEN..len)?;
        buf = buf.get(align4(len)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// A string attribute's value without its NUL terminator.
fn attr_str(value: &[u8]) -> String {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// One nf_tables message to send, with what it does (for error messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    kind: u8,
    flags: u16,
    attrs: Attrs,
    what: String,
}

/// `add table inet skiff-cni` (a no-op if it exists).
pub fn new_table() -> Request {
    Request {
        kind: NFT_MSG_NEWTABLE,
        flags: NLM_F_CREATE,
        attrs: Attrs::new().str(NFTA_TABLE_NAME, TABLE),
        what: format!("create table {TABLE}"),
    }
}

/// `delete table inet skiff-cni`, with whatever it holds.
pub fn del_table() -> Request {
    Request {
        kind: NFT_MSG_DELTABLE,
        flags: 0,
        attrs: Attrs::new().str(NFTA_TABLE_NAME, TABLE),
        what: format!("delete table {TABLE}"),
    }
}

/// A NAT base chain with policy accept.
pub fn new_chain(chain: &Chain) -> Request {
    let hook = Attrs::new()
        .u32(NFTA_HOOK_HOOKNUM, chain.hook.number())
        // The priority is a signed 32-bit number sent as its bits.
        .u32(NFTA_HOOK_PRIORITY, chain.prio as u32);
    Request {
        kind: NFT_MSG_NEWCHAIN,
        flags: NLM_F_CREATE,
        attrs: Attrs::new()
            .str(NFTA_CHAIN_TABLE, TABLE)
            .str(NFTA_CHAIN_NAME, &chain.name)
            .nested(NFTA_CHAIN_HOOK, hook)
            .u32(NFTA_CHAIN_POLICY, NF_ACCEPT)
            .str(NFTA_CHAIN_TYPE, "nat"),
        what: format!("create chain {}", chain.name),
    }
}

/// Deletes an (empty, or emptied earlier in the same batch) chain.
pub fn del_chain(name: &str) -> Request {
    Request {
        kind: NFT_MSG_DELCHAIN,
        flags: 0,
        attrs: Attrs::new()
            .str(NFTA_CHAIN_TABLE, TABLE)
            .str(NFTA_CHAIN_NAME, name),
        what: format!("delete chain {name}"),
    }
}

/// Appends a rule to its chain, its comment as userdata.
pub fn new_rule(rule: &Rule) -> Request {
    Request {
        kind: NFT_MSG_NEWRULE,
        flags: NLM_F_CREATE | NLM_F_APPEND,
        attrs: Attrs::new()
            .str(NFTA_RULE_TABLE, TABLE)
            .str(NFTA_RULE_CHAIN, &rule.chain)
            .nested(NFTA_RULE_EXPRESSIONS, expr::encode(&rule.expr))
            .bytes(NFTA_RULE_USERDATA, &comment_userdata(&rule.comment)),
        what: format!(
            "add rule to chain {} (comment {:?})",
            rule.chain, rule.comment
        ),
    }
}

/// Deletes a rule by handle.
pub fn del_rule(rule: &RuleRef) -> Request {
    Request {
        kind: NFT_MSG_DELRULE,
        flags: 0,
        attrs: Attrs::new()
            .str(NFTA_RULE_TABLE, TABLE)
            .str(NFTA_RULE_CHAIN, &rule.chain)
            .u64(NFTA_RULE_HANDLE, rule.handle),
        what: format!("delete rule {} of chain {}", rule.handle, rule.chain),
    }
}

/// A comment in libnftnl's userdata layout: one TLV of type
/// [`UDATA_RULE_COMMENT`], a one-byte length, the NUL-terminated text.
/// Comments longer than nft's 127 bytes are cut (tags never are).
pub fn comment_userdata(comment: &str) -> Vec<u8> {
    let mut text = &comment.as_bytes()[..comment.len().min(127)];
    if let Some(nul) = text.iter().position(|&b| b == 0) {
        text = &text[..nul];
    }
    let mut udata = vec![UDATA_RULE_COMMENT, text.len() as u8 + 1];
    udata.extend_from_slice(text);
    udata.push(0);
    udata
}

/// The comment in a rule's userdata ("" if it has none).
pub fn userdata_comment(mut udata: &[u8]) -> String {
    while let [kind, len, rest @ ..] = udata {
        let Some(value) = rest.get(..usize::from(*len)) else {
            break;
        };
        if *kind == UDATA_RULE_COMMENT {
            return attr_str(value);
        }
        udata = &rest[value.len()..];
    }
    String::new()
}

/// A rule as listed: (table, rule). `None` if an attribute we need is missing.
fn decode_rule(attrs: &[u8]) -> Option<(String, RuleRef)> {
    let (mut table, mut chain, mut handle, mut comment) = (None, None, None, String::new());
    for (kind, value) in parse_attrs(attrs) {
        match kind {
            NFTA_RULE_TABLE => table = Some(attr_str(value)),
            NFTA_RULE_CHAIN => chain = Some(attr_str(value)),
            NFTA_RULE_HANDLE => handle = Some(u64::from_be_bytes(value.try_into().ok()?)),
            NFTA_RULE_USERDATA => comment = userdata_comment(value),
            _ => {}
        }
    }
    let rule = RuleRef {
        chain: chain?,
        handle: handle?,
        comment,
    };
    Some((table?, rule))
}

/// A chain as listed: (table, name).
fn decode_chain(attrs: &[u8]) -> Option<(String, String)> {
    let (mut table, mut name) = (None, None);
    for (kind, value) in parse_attrs(attrs) {
        match kind {
            NFTA_CHAIN_TABLE => table = Some(attr_str(value)),
            NFTA_CHAIN_NAME => name = Some(attr_str(value)),
            _ => {}
        }
    }
    Some((table?, name?))
}

/// Appends one message: netlink header, nfgenmsg, attributes.
fn put_message(buf: &mut Vec<u8>, header: Header, attrs: &[u8]) {
    let len = (NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len()) as u32;
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&header.kind.to_ne_bytes());
    buf.extend_from_slice(&header.flags.to_ne_bytes());
    buf.extend_from_slice(&header.seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    buf.extend_from_slice(&[header.family, NFNETLINK_V0]);
    buf.extend_from_slice(&header.res_id.to_be_bytes());
    buf.extend_from_slice(attrs);
}

/// The header fields of one message.
struct Header {
    kind: u16,
    flags: u16,
    seq: u32,
    /// nfgenmsg's family.
    family: u8,
    /// nfgenmsg's resource id: the subsystem, for batch markers.
    res_id: u16,
}

impl Header {
    /// An nf_tables message about the inet family.
    fn nft(kind: u8, flags: u16, seq: u32) -> Header {
        Header {
            kind: NFNL_SUBSYS_NFTABLES << 8 | u16::from(kind),
            flags: NLM_F_REQUEST | flags,
            seq,
            family: NFPROTO_INET,
            res_id: 0,
        }
    }

    /// A conntrack message about one address family (`AF_INET`, `AF_INET6`).
    fn conntrack(kind: u8, flags: u16, seq: u32, family: u8) -> Header {
        Header {
            kind: NFNL_SUBSYS_CTNETLINK << 8 | u16::from(kind),
            flags: NLM_F_REQUEST | flags,
            seq,
            family,
            res_id: 0,
        }
    }

    /// The start or end of a batch for nf_tables.
    fn batch(kind: u16, seq: u32) -> Header {
        Header {
            kind,
            flags: NLM_F_REQUEST,
            seq,
            family: 0,
            res_id: NFNL_SUBSYS_NFTABLES,
        }
    }
}

/// One message read from the socket.
struct Reply {
    kind: u16,
    flags: u16,
    seq: u32,
    /// What follows the netlink header.
    payload: Vec<u8>,
}

impl Reply {
    /// For `NLMSG_ERROR`: the errno (0 for an acknowledgement).
    fn errno(&self) -> Result<i32, NftError> {
        let code = self
            .payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_ne_bytes)
            .ok_or_else(|| NftError::Decode("short netlink error message".into()))?;
        Ok(-code)
    }

    /// The attributes of an nf_tables message (after its nfgenmsg).
    fn attrs(&self) -> &[u8] {
        self.payload.get(NFGENMSG_LEN..).unwrap_or_default()
    }
}

fn kernel_error(what: &str, errno: i32) -> NftError {
    NftError::Kernel {
        op: what.to_string(),
        source: io::Error::from_raw_os_error(errno),
    }
}

/// A `NETLINK_NETFILTER` socket in the calling thread's network namespace.
pub struct Socket {
    socket: RawSocket,
    seq: u32,
    buf: Vec<u8>,
}

impl Socket {
    /// Opens and binds the socket.
    pub fn open() -> Result<Socket, NftError> {
        let mut socket = RawSocket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
        socket.bind_auto().map_err(NftError::Socket)?;
        // Error messages then quote only the refused message's header, not
        // the whole rule.
        socket.set_cap_ack(true).map_err(NftError::Socket)?;
        let timeout = TimeVal::new(REPLY_TIMEOUT_SECS, 0);
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)
            .map_err(|e| NftError::Socket(e.into()))?;
        Ok(Socket {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, buf: &[u8]) -> Result<(), NftError> {
        // A batch is one datagram, which must fit in the send buffer
        // (≈ 200 KiB by default, a few thousand rule deletions): grow it
        // for huge GCs. The FORCE variant ignores wmem_max; we are root.
        if buf.len() > 128 * 1024 {
            let size = buf.len() * 2;
            if setsockopt(&self.socket, sockopt::SndBufForce, &size).is_err() {
                setsockopt(&self.socket, sockopt::SndBuf, &size)
                    .map_err(|e| NftError::Socket(e.into()))?;
            }
        }
        self.socket
            .send_to(buf, &SocketAddr::new(0, 0), 0)
            .map_err(NftError::Socket)?;
        Ok(())
    }

    /// Reads one datagram and splits it into messages.
    fn recv(&mut self) -> Result<Vec<Reply>, NftError> {
        self.buf.clear();
        let len = self
            .socket
            .recv(&mut self.buf, libc::MSG_TRUNC)
            .map_err(NftError::Socket)?;
        if len > self.buf.len() {
            return Err(NftError::Decode(format!(
                "a {len}-byte reply does not fit in {} bytes",
                self.buf.len()
            )));
        }
        let mut replies = Vec::new();
        let mut rest = &self.buf[..];
        while rest.len() >= NLMSG_HDRLEN {
            let word = |at: usize| {
                u32::from_ne_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]])
            };
            let len = word(0) as usize;
            if len < NLMSG_HDRLEN || len > rest.len() {
                return Err(NftError::Decode(format!(
                    "bad netlink message length {len}"
                )));
            }
            replies.push(Reply {
                kind: u16::from_ne_bytes([rest[4], rest[5]]),
                flags: u16::from_ne_bytes([rest[6], rest[7]]),
                seq: word(8),
                payload: rest[NLMSG_HDRLEN..len].to_vec(),
            });
            rest = rest.get(align4(len)..).unwrap_or_default();
        }
        Ok(replies)
    }

    /// Sends a get request for one object; succeeds if the kernel answers
    /// with it.
    fn get(&mut self, kind: u8, attrs: Attrs, what: &str) -> Result<(), NftError> {
        let seq = self.next_seq();
        let mut buf = Vec::new();
        put_message(&mut buf, Header::nft(kind, 0, seq), attrs.as_bytes());
        self.send(&buf)?;
        loop {
            for reply in self.recv()? {
                if reply.seq != seq {
                    continue;
                }
                return match reply.kind {
                    NLMSG_ERROR => Err(kernel_error(what, reply.errno()?)),
                    _ => Ok(()),
                };
            }
        }
    }

    /// Dumps objects of one kind; returns each one's attributes. Restarts
    /// when the kernel says the ruleset changed during the dump.
    fn dump(&mut self, kind: u8, filter: &Attrs, what: &str) -> Result<Vec<Vec<u8>>, NftError> {
        self.dump_with(|seq| Header::nft(kind, NLM_F_DUMP, seq), filter, what)
    }

    /// [`Self::dump`] of the message `header` makes for a sequence number.
    fn dump_with(
        &mut self,
        header: impl Fn(u32) -> Header,
        filter: &Attrs,
        what: &str,
    ) -> Result<Vec<Vec<u8>>, NftError> {
        for _ in 0..5 {
            let seq = self.next_seq();
            let mut buf = Vec::new();
            put_message(&mut buf, header(seq), filter.as_bytes());
            self.send(&buf)?;
            let (mut objects, mut interrupted) = (Vec::new(), false);
            'dump: loop {
                for reply in self.recv()? {
                    if reply.seq != seq {
                        continue;
                    }
                    interrupted |= reply.flags & NLM_F_DUMP_INTR != 0;
                    match reply.kind {
                        // Both may carry an errno (0 when all is well).
                        NLMSG_DONE | NLMSG_ERROR => match reply.errno().unwrap_or(0) {
                            0 => break 'dump,
                            errno => return Err(kernel_error(what, errno)),
                        },
                        _ => objects.push(reply.attrs().to_vec()),
                    }
                }
            }
            if !interrupted {
                return Ok(objects);
            }
        }
        Err(NftError::Decode(format!(
            "{what}: the kernel's objects kept changing during the dump"
        )))
    }

    /// Every conntrack entry of `family`, as its attributes.
    pub fn conntrack_entries(&mut self, family: u8) -> Result<Vec<Vec<u8>>, NftError> {
        let header = |seq| Header::conntrack(IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq, family);
        self.dump_with(header, &Attrs::new(), "list conntrack entries")
    }

    /// Deletes the conntrack entry `key` names (its original tuple, and its zone).
    /// An entry that is gone already is fine.
    pub fn delete_conntrack(&mut self, family: u8, key: &Attrs) -> Result<(), NftError> {
        let seq = self.next_seq();
        let mut buf = Vec::new();
        let header = Header::conntrack(IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq, family);
        put_message(&mut buf, header, key.as_bytes());
        self.send(&buf)?;
        loop {
            for reply in self.recv()? {
                if reply.seq != seq || reply.kind != NLMSG_ERROR {
                    continue;
                }
                return match reply.errno()? {
                    0 | libc::ENOENT => Ok(()),
                    errno => Err(kernel_error("delete a conntrack entry", errno)),
                };
            }
        }
    }

    /// The ruleset generation: proof that nf_tables answers.
    pub fn generation(&mut self) -> Result<(), NftError> {
        self.get(NFT_MSG_GETGEN, Attrs::new(), "read the ruleset generation")
    }

    /// True if our table exists.
    pub fn has_table(&mut self) -> Result<bool, NftError> {
        let attrs = Attrs::new().str(NFTA_TABLE_NAME, TABLE);
        match self.get(NFT_MSG_GETTABLE, attrs, "look up table") {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Names of our table's chains (none if the table is missing).
    pub fn chains(&mut self) -> Result<Vec<String>, NftError> {
        // The kernel dumps the chains of every inet table: keep ours.
        let filter = Attrs::new().str(NFTA_CHAIN_TABLE, TABLE);
        let objects = self.dump(NFT_MSG_GETCHAIN, &filter, "list chains")?;
        Ok(objects
            .iter()
            .filter_map(|attrs| decode_chain(attrs))
            .filter(|(table, _)| table == TABLE)
            .map(|(_, name)| name)
            .collect())
    }

    /// Our table's rules.
    pub fn rules(&mut self) -> Result<Vec<RuleRef>, NftError> {
        let filter = Attrs::new().str(NFTA_RULE_TABLE, TABLE);
        let objects = self.dump(NFT_MSG_GETRULE, &filter, "list rules")?;
        Ok(objects
            .iter()
            .filter_map(|attrs| decode_rule(attrs))
            .filter(|(table, _)| table == TABLE)
            .map(|(_, rule)| rule)
            .collect())
    }

    /// Applies `requests` as one transaction: all or nothing. On failure,
    /// the error names the first request the kernel refused.
    pub fn batch(&mut self, requests: &[Request]) -> Result<(), NftError> {
        let Some(last) = requests.len().checked_sub(1) else {
            return Ok(());
        };
        let begin = self.next_seq();
        let mut buf = Vec::new();
        put_message(&mut buf, Header::batch(NFNL_MSG_BATCH_BEGIN, begin), &[]);
        for (i, r) in requests.iter().enumerate() {
            // Only the last request asks for an acknowledgement: the kernel
            // reports errors (always) and acks in request order once the
            // batch is done, so that ack means every answer has arrived.
            // Acking every request would overflow the receive buffer on
            // large batches.
            let ack = if i == last { NLM_F_ACK } else { 0 };
            let header = Header::nft(r.kind, r.flags | ack, self.next_seq());
            put_message(&mut buf, header, r.attrs.as_bytes());
        }
        let end = self.next_seq();
        put_message(&mut buf, Header::batch(NFNL_MSG_BATCH_END, end), &[]);
        self.send(&buf)?;

        let mut first_error = None;
        loop {
            for reply in self.recv()? {
                if reply.kind != NLMSG_ERROR {
                    continue;
                }
                let errno = reply.errno()?;
                let index = reply.seq.wrapping_sub(begin).wrapping_sub(1) as usize;
                let Some(request) = requests.get(index) else {
                    // About the batch as a whole (e.g. the commit failed):
                    // nothing else will come.
                    if errno != 0 {
                        return Err(kernel_error("apply the batch", errno));
                    }
                    continue;
                };
                if errno != 0 && first_error.is_none() {
                    first_error = Some(kernel_error(&request.what, errno));
                }
                if index == last {
                    return first_error.map_or(Ok(()), Err);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_nested() {
        let a = Attrs::new()
            .str(1, "ab")
            .nested(2, Attrs::new().u32(1, 0x0102_0304));
        let mut want = Vec::new();
        want.extend_from_slice(&7u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(b"ab\0\0"); // value + NUL, padded
        want.extend_from_slice(&12u16.to_ne_bytes());
        want.extend_from_slice(&(2u16 | NLA_F_NESTED).to_ne_bytes());
        want.extend_from_slice(&8u16.to_ne_bytes());
        want.extend_from_slice(&1u16.to_ne_bytes());
        want.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(a.as_bytes(), &want[..]);

        let parsed: Vec<(u16, &[u8])> = parse_attrs(a.as_bytes()).collect();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], (1, &b"ab\0"[..]));
        assert_eq!(parsed[1].0, 2);
        // Truncated input ends the iteration instead of panicking.
        assert_eq!(parse_attrs(&a.as_bytes()[..5]).count(), 0);
    }

    #[test]
    fn comments_use_nft_userdata_layout() {
        assert_eq!(comment_userdata("id/eth0"), b"\x00\x08id/eth0\x00");
        assert_eq!(userdata_comment(b"\x00\x08id/eth0\x00"), "id/eth0");
        // Another TLV first, then the comment.
        assert_eq!(userdata_comment(b"\x05\x01x\x00\x02a\x00"), "a");
        assert_eq!(userdata_comment(b"\x00\x09short"), "");
        assert_eq!(comment_userdata(&"x".repeat(300)).len(), 2 + 128);
    }

    #[test]
    fn a_listed_rule_is_decoded() {
        let attrs = Attrs::new()
            .str(NFTA_RULE_TABLE, TABLE)
            .str(NFTA_RULE_CHAIN, "masq-n")
            .u64(NFTA_RULE_HANDLE, 42)
            .bytes(NFTA_RULE_USERDATA, &comment_userdata("c/eth0"));
        let (table, rule) = decode_rule(attrs.as_bytes()).expect("decoded");
        assert_eq!(table, TABLE);
        assert_eq!(
            rule,
            RuleRef {
                chain: "masq-n".into(),
                handle: 42,
                comment: "c/eth0".into()
            }
        );
        let no_handle = Attrs::new().str(NFTA_RULE_TABLE, TABLE);
        assert!(decode_rule(no_handle.as_bytes()).is_none());
    }
}
