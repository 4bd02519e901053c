#!/usr/bin/env python3
"""bitmap-dump.py IMAGE: print each persistent bitmap of a qcow2 image as
"name granularity flags sha256-of-its-data", read straight from the file
(header extension, directory, table, data), so tests can compare an image
qimg wrote with one qemu-img wrote, independently of qimg's parser."""
import hashlib
import struct
import sys

d = open(sys.argv[1], 'rb').read()
cluster = 1 << struct.unpack('>I', d[20:24])[0]
size = struct.unpack('>Q', d[24:32])[0]
hlen = struct.unpack('>I', d[100:104])[0]
autoclear = struct.unpack('>Q', d[88:96])[0]
pos, ext = hlen, None
while True:
    t, l = struct.unpack('>II', d[pos:pos + 8])
    if t == 0:
        break
    if t == 0x23852875:
        ext = struct.unpack('>IIQQ', d[pos + 8:pos + 32])
    pos += 8 + ((l + 7) & ~7)
if not ext:
    sys.exit(0)
if not autoclear & 1:
    print("stale")
    sys.exit(0)
nb, _, dsize, doff = ext
p = doff
for _ in range(nb):
    toff, tsize, flags, typ, gbits, nlen, extra = struct.unpack('>QIIBBHI', d[p:p + 24])
    name = d[p + 24 + extra:p + 24 + extra + nlen].decode()
    p += (24 + extra + nlen + 7) & ~7
    nbits = (size + (1 << gbits) - 1) >> gbits
    nbytes = (nbits + 7) // 8
    data = bytearray()
    for i in range(tsize):
        e = struct.unpack('>Q', d[toff + 8 * i:toff + 8 * i + 8])[0]
        n = min(cluster, nbytes - i * cluster)
        off = e & 0x00fffffffffffe00
        if off:
            data += d[off:off + n]
        else:
            data += (b'\xff' if e & 1 else b'\0') * n
    fl = ','.join(f for b, f in ((1, 'in-use'), (2, 'auto'), (4, 'extra')) if flags & b)
    print(name, 1 << gbits, fl or '-', sum(bin(x).count('1') for x in data),
          hashlib.sha256(bytes(data)).hexdigest()[:16])
