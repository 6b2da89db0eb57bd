#!/usr/bin/env python3
"""Makes Debian bookworm's torch 1.13.1 torchrun work on Python 3.11:  torch-py311.py ROOTFS

torch.distributed.elastic's Std.from_str finds a value by iterating over the Std flag, and since
Python 3.11 iterating a Flag yields only its single-bit members, so "0" (the default of
--redirects and --tee) maps to None and torchrun dies with
"AttributeError: 'NoneType' object has no attribute 'get'". This applies PyTorch's own fix
(upstream since 2.0): Std(int(v)).
"""
import sys

path = sys.argv[1] + "/usr/lib/python3/dist-packages/torch/distributed/elastic/multiprocessing/api.py"
old = """            v = int(v)
            for s in Std:
                if s == v:
                    return s
"""
new = """            return Std(int(v))
"""
src = open(path).read()
if new in src:
    sys.exit(0)
if old not in src:
    sys.exit(f"torch-py311.py: the expected code is not in {path}: check whether the fix is still needed")
with open(path, "w") as f:
    f.write(src.replace(old, new, 1))
