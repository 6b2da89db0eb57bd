#!/usr/bin/env python3
"""Wraps a root filesystem tar as a single-layer OCI image-layout tar (stdlib only).

    oci-pack.py ROOTFS_TAR OUT_TAR REF [--entrypoint JSON] [--cmd JSON] [--user U] [--env K=V]...
                [--workdir DIR] [--label K=V]... [--epoch SECONDS] [--owner0]

ROOTFS_TAR is rewritten into a normalized layer, so that the same files give the same digest:
entries sorted by name, numeric ownership only (no user or group names; --owner0 forces 0:0),
mtimes clamped to --epoch (default $SOURCE_DATE_EPOCH, else 0), no atime/ctime, extended
attributes kept, nothing under /dev but the directory itself (the runtime mounts /dev), hard links
pointing at the first name in sorted order. The layer is stored uncompressed, so its diff_id is its
digest.

OUT_TAR holds `oci-layout`, `index.json` (one manifest, annotated with
`org.opencontainers.image.ref.name` = REF's tag and `io.containerd.image.name` = REF) and
`blobs/sha256/*`. skopeo reads it as `oci-archive:OUT_TAR`, `ctr images import` imports it.
Prints the manifest digest on stdout.
"""
import argparse
import datetime
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, f):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b):
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)

    def tell(self):
        return self.n


def clean_name(name):
    while name.startswith("./"):
        name = name[2:]
    name = name.lstrip("/")
    if name in ("", "."):
        return ""
    return name.rstrip("/")


def write_layer(src_path, out, epoch, owner0):
    with tarfile.open(src_path, "r:") as src:
        seen = {}
        for m in src.getmembers():
            name = clean_name(m.name)
            if not name:
                continue
            if name.startswith("dev/"):
                continue  # device nodes and /dev symlinks: the runtime provides /dev
            m.name = name
            if m.islnk():
                m.linkname = clean_name(m.linkname)
            seen[name] = m  # a later entry of the same name wins, as on extraction
        members = sorted(seen.values(), key=lambda m: m.name)
        # Hard links: within each group of names sharing content, the first in sorted order
        # carries the data and the others link to it (a link must follow its target).
        groups = {}
        for m in members:
            if m.islnk():
                groups.setdefault(m.linkname, []).append(m.name)
        data_of = {}  # name that carries the data -> member to read the data from
        link_to = {}  # name -> the name it links to
        for target, links in groups.items():
            if target not in seen:
                raise SystemExit(f"oci-pack: hard link to missing {target!r} in {src_path}")
            names = sorted([target] + links)
            data_of[names[0]] = seen[target]
            for n in names[1:]:
                link_to[n] = names[0]

        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as dst:
            for m in members:
                t = tarfile.TarInfo(m.name)
                t.mode = m.mode & 0o7777
                t.uid, t.gid = (0, 0) if owner0 else (m.uid, m.gid)
                t.uname = t.gname = ""
                t.mtime = min(int(m.mtime), epoch)
                t.pax_headers = {k: v for k, v in m.pax_headers.items() if k.startswith("SCHILY.xattr.")}
                data = None
                if m.name in link_to:
                    t.type, t.linkname = tarfile.LNKTYPE, link_to[m.name]
                elif m.name in data_of:
                    srcm = data_of[m.name]
                    t.type, t.size = tarfile.REGTYPE, srcm.size
                    t.mode = srcm.mode & 0o7777
                    data = srcm
                elif m.isreg():
                    t.type, t.size, data = tarfile.REGTYPE, m.size, m
                elif m.isdir():
                    t.type = tarfile.DIRTYPE
                elif m.issym():
                    t.type, t.linkname = tarfile.SYMTYPE, m.linkname
                elif m.isfifo():
                    t.type = tarfile.FIFOTYPE
                elif m.ischr() or m.isblk():
                    t.type, t.devmajor, t.devminor = m.type, m.devmajor, m.devminor
                else:
                    raise SystemExit(f"oci-pack: unsupported entry {m.name!r} (type {m.type!r})")
                if data is not None:
                    if not data.isreg():
                        raise SystemExit(f"oci-pack: hard link target {data.name!r} is not a regular file")
                    with src.extractfile(data) as f:  # reads at the member's offset
                        dst.addfile(t, f)
                else:
                    dst.addfile(t)


def add_bytes(tar, name, data, epoch, mode=0o644):
    t = tarfile.TarInfo(name)
    t.size, t.mtime, t.mode, t.uname, t.gname = len(data), epoch, mode, "", ""
    tar.addfile(t, io.BytesIO(data))


def add_dir(tar, name, epoch):
    t = tarfile.TarInfo(name)
    t.type, t.mtime, t.mode, t.uname, t.gname = tarfile.DIRTYPE, epoch, 0o755, "", ""
    tar.addfile(t)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rootfs")
    p.add_argument("out")
    p.add_argument("ref", help="repository:tag, e.g. mlcompute/python-ml:0123abcd4567")
    p.add_argument("--entrypoint", type=json.loads, default=None, help='JSON array, e.g. \'["/pause"]\'')
    p.add_argument("--cmd", type=json.loads, default=None, help="JSON array")
    p.add_argument("--user", default="")
    p.add_argument("--workdir", default="")
    p.add_argument("--env", action="append", default=[], help="K=V (repeatable); PATH defaults to the usual")
    p.add_argument("--label", action="append", default=[], help="K=V (repeatable)")
    p.add_argument("--epoch", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    p.add_argument("--owner0", action="store_true", help="every entry owned by 0:0")
    a = p.parse_args()
    for v, what in ((a.entrypoint, "--entrypoint"), (a.cmd, "--cmd")):
        if v is not None and not (isinstance(v, list) and all(isinstance(s, str) for s in v)):
            sys.exit(f"oci-pack: {what} must be a JSON array of strings")
    tag = a.ref.rsplit(":", 1)[1] if ":" in a.ref.rsplit("/", 1)[-1] else "latest"

    out_dir = os.path.dirname(os.path.abspath(a.out))
    with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".layer-", delete=True) as layer:
        hw = HashingWriter(layer)
        write_layer(a.rootfs, hw, a.epoch, a.owner0)
        layer.flush()
        layer_digest, layer_size = "sha256:" + hw.h.hexdigest(), hw.n

        env = list(a.env)
        if not any(e.startswith("PATH=") for e in env):
            env.insert(0, "PATH=" + DEFAULT_PATH)
        cfg = {"Env": env}
        if a.entrypoint is not None:
            cfg["Entrypoint"] = a.entrypoint
        if a.cmd is not None:
            cfg["Cmd"] = a.cmd
        if a.user:
            cfg["User"] = a.user
        if a.workdir:
            cfg["WorkingDir"] = a.workdir
        if a.label:
            cfg["Labels"] = dict(kv.split("=", 1) for kv in a.label)
        created = datetime.datetime.fromtimestamp(a.epoch, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        config = canonical({
            "created": created,
            "architecture": "amd64",
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
            "history": [{"created": created, "created_by": "e2e/images/oci-pack.py"}],
        })
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = canonical({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer_size}],
        })
        manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        index = canonical({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": len(manifest),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"org.opencontainers.image.ref.name": tag,
                                "io.containerd.image.name": a.ref},
            }],
        })

        tmp_out = a.out + ".tmp"
        with open(tmp_out, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as t:
            add_bytes(t, "oci-layout", canonical({"imageLayoutVersion": "1.0.0"}), a.epoch)
            add_bytes(t, "index.json", index, a.epoch)
            add_dir(t, "blobs", a.epoch)
            add_dir(t, "blobs/sha256", a.epoch)
            add_bytes(t, "blobs/sha256/" + config_digest[7:], config, a.epoch)
            add_bytes(t, "blobs/sha256/" + manifest_digest[7:], manifest, a.epoch)
            li = tarfile.TarInfo("blobs/sha256/" + layer_digest[7:])
            li.size, li.mtime, li.mode, li.uname, li.gname = layer_size, a.epoch, 0o644, "", ""
            layer.seek(0)
            t.addfile(li, layer)
        os.replace(tmp_out, a.out)
    print(manifest_digest)


if __name__ == "__main__":
    main()
