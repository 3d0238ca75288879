"""The leak battery's job side: prints secrets in every form the redactor
knows, split at every byte offset, on stdout, stderr and across the two,
with pauses on some splits. Run inside an Airlock job by e2e.rs.

argv: the names of files under /run/secrets. A value derived at run time
(the first secret reversed, plus "-rt") is registered through the mask
channel first, then printed like the others.

`battery.py --plan HEX...` (on the host, from the test) prints as JSON what
the test must look for: the needles (each form, or for a base64 form of the
value behind a prefix, the part that depends on the value alone) and how
many splits the job will print, for the values given in hex.
"""
import base64
import json
import os
import sys
import time
import urllib.parse

MASK_CHANNEL = "/run/airlock/mask"


def forms(v: bytes, needles: bool = False):
    """Every form of v, as the redactor's documentation lists them; with
    `needles`, only the part of each that cannot depend on other output."""
    out = [v]
    lines = v.split(b"\n")
    if len(lines) > 1:
        out += [l for l in lines if len(l) >= 6]
        out.append(v.replace(b"\n", b"\r\n"))
    for prefix in (b"", b"x", b"xy"):
        for enc in (base64.b64encode(prefix + v), base64.urlsafe_b64encode(prefix + v)):
            if needles and prefix:
                # The first and last groups mix in bytes of the prefix, or
                # depend on the padding.
                out.append(enc[4:-4])
                continue
            out.append(enc)
            out.append(enc.rstrip(b"="))
    out.append(v.hex().encode())
    out.append(v.hex().upper().encode())
    out.append(urllib.parse.quote(v, safe="").encode())
    out.append(urllib.parse.quote_plus(v).encode())
    out.append(json.dumps(v.decode()).encode()[1:-1])
    return out


def write(fd: int, b: bytes):
    while b:
        b = b[os.write(fd, b):]


def paused(v: bytes, f: bytes) -> bool:
    """Whether form f of v is also printed with pauses (two forms per value,
    to keep the job short)."""
    return f in (v, v.hex().encode())


def battery(v: bytes) -> int:
    count = 0
    for f in forms(v):
        for k in range(1, len(f)):
            a, b = f[:k], f[k:]
            # Both halves on stdout, on stderr, and one on each.
            for first, second in ((1, 1), (2, 2), (1, 2), (2, 1)):
                write(first, b"<" + a)
                write(second, b + b">\n")
                count += 1
        if not paused(v, f):
            continue
        # Pauses longer than the runner's idle flush, at three offsets.
        for k in (1, len(f) // 2, len(f) - 1):
            write(1, b"[" + f[:k])
            time.sleep(0.15)
            write(2, f[k:] + b"]\n")
            count += 1
    return count


def runtime_value(first: bytes) -> bytes:
    return first[::-1] + b"-rt"


def plan(hexes):
    values = [bytes.fromhex(h) for h in hexes]
    values.append(runtime_value(values[0]))
    needles = sorted({n.hex() for v in values for n in forms(v, needles=True)})
    splits = sum(
        4 * (len(f) - 1) + (3 if paused(v, f) else 0) for v in values for f in forms(v)
    )
    print(json.dumps({"needles": needles, "splits": splits}))


def main():
    if sys.argv[1:2] == ["--plan"]:
        return plan(sys.argv[2:])
    values = []
    for name in sys.argv[1:]:
        with open(os.path.join("/run/secrets", name), "rb") as f:
            values.append(f.read())
    runtime = runtime_value(values[0])
    # Register, then print: the mask is known before the first byte of it.
    with open(MASK_CHANNEL, "wb") as m:
        m.write(runtime + b"\n")
    values.append(runtime)
    total = sum(battery(v) for v in values)
    print(f"battery done: {total} splits")


main()
