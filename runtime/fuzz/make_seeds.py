#!/usr/bin/env python3
"""Writes the binary seeds of the unpack_layer fuzz target into corpus/unpack_layer/.

Each seed is a small layer: ordinary content, OCI whiteouts, PAX records, special files,
and the escapes a hostile registry would try (`..`, absolute and relative symlinks, hard
links out of the root). Run it again after changing it; the output is deterministic.
"""

import gzip
import io
import os
import subprocess
import tarfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "unpack_layer")
MTIME = 1_700_000_000


def entry(name, kind=tarfile.REGTYPE, data=b"", **fields):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mtime = MTIME
    info.mode = fields.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    for key, value in fields.items():
        setattr(info, key, value)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, data


def layer(entries, fmt=tarfile.GNU_FORMAT):
    """A tar of `entries`, cut right after its two end blocks (no record padding)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data else None)
    raw = buf.getvalue().rstrip(b"\0")
    blocks = -(-len(raw) // 512)
    return raw.ljust(blocks * 512, b"\0") + b"\0" * 1024


BASIC = [
    entry("bin/", tarfile.DIRTYPE),
    entry("bin/busybox", data=b"\x7fELF\x02\x01\x01" + b"\0" * 9, mode=0o755),
    entry("bin/sh", tarfile.SYMTYPE, linkname="busybox"),
    entry("bin/ls", tarfile.LNKTYPE, linkname="bin/busybox"),
    entry("etc/", tarfile.DIRTYPE),
    entry("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
    entry("tmp/", tarfile.DIRTYPE, mode=0o1777),
    entry("usr/bin/su", data=b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0),
]

SEEDS = {
    "basic.tar": layer(BASIC),
    "whiteouts.tar": layer([
        entry("etc/", tarfile.DIRTYPE),
        entry("etc/.wh.passwd"),
        entry("usr/", tarfile.DIRTYPE),
        entry("usr/.wh..wh..opq"),
        entry(".wh..wh.plnk/", tarfile.DIRTYPE),
        entry("var/.wh.cache"),
    ]),
    "pax-xattrs.tar": layer([
        entry("data/", tarfile.DIRTYPE, pax_headers={"SCHILY.xattr.user.comment": "kept"}),
        entry("data/f", data=b"x", pax_headers={
            "SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
            "SCHILY.xattr.trusted.overlay.opaque": "y",
            "mtime": "1700000000.123456789",
        }),
        entry("data/" + "n" * 150, data=b"long name"),
    ], fmt=tarfile.PAX_FORMAT),
    "gnu-long-names.tar": layer([
        entry("d/" + "a" * 120 + "/", tarfile.DIRTYPE),
        entry("d/" + "a" * 120 + "/" + "b" * 110, data=b"y"),
        entry("d/link", tarfile.SYMTYPE, linkname="/" + "c" * 140),
    ]),
    "special-files.tar": layer([
        entry("dev/", tarfile.DIRTYPE),
        entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        entry("dev/loop0", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660),
        entry("run/fifo", tarfile.FIFOTYPE),
        entry("dev/.wh.null"),
    ]),
    "replace-without-following.tar": layer([
        entry("a", tarfile.SYMTYPE, linkname="/etc"),
        entry("a", tarfile.DIRTYPE),
        entry("a/f", data=b"inside"),
        entry("b/", tarfile.DIRTYPE),
        entry("b", data=b"a file replaces a directory"),
    ]),
    "escape-dotdot.tar": layer([
        entry("../escaped", data=b"out"),
        entry("ok/../../escaped2", data=b"out"),
    ]),
    "escape-absolute.tar": layer([
        entry("/escaped", data=b"out"),
    ]),
    "escape-absolute-symlink.tar": layer([
        entry("up", tarfile.SYMTYPE, linkname="/"),
        entry("up/escaped", data=b"out"),
    ]),
    "escape-relative-symlink.tar": layer([
        entry("d/", tarfile.DIRTYPE),
        entry("d/up", tarfile.SYMTYPE, linkname="../../.."),
        entry("d/up/escaped", data=b"out"),
    ]),
    "escape-hardlink.tar": layer([
        entry("passwd", tarfile.LNKTYPE, linkname="../../../etc/passwd"),
        entry("shadow", tarfile.LNKTYPE, linkname="/etc/shadow"),
        entry("s", tarfile.SYMTYPE, linkname="/etc"),
        entry("group", tarfile.LNKTYPE, linkname="s/group"),
    ]),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    # Compressed layers: the unpacker picks the decompressor from the magic bytes.
    for name in ("basic.tar", "escape-relative-symlink.tar"):
        with open(os.path.join(OUT, name + ".gz"), "wb") as f:
            f.write(gzip.compress(SEEDS[name], mtime=0))
    zstd = subprocess.run(["zstd", "-q", "-19", "-c"], input=SEEDS["whiteouts.tar"],
                          capture_output=True, check=True)
    with open(os.path.join(OUT, "whiteouts.tar.zst"), "wb") as f:
        f.write(zstd.stdout)


if __name__ == "__main__":
    main()
