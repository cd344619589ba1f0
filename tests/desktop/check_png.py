#!/usr/bin/env python3
"""Checks that a file is a valid, non-blank PNG screenshot, with nothing but the
standard library: chunk CRCs, IHDR, zlib stream, scanline filters; then counts
colours. Prints one line and exits 0 (valid and not blank) or 1.
   check_png.py FILE [MIN_WIDTH MIN_HEIGHT]"""
import struct
import sys
import zlib


def fail(msg):
    print(f"FAIL: {sys.argv[1]}: {msg}")
    sys.exit(1)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def main():
    path = sys.argv[1]
    min_w = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    min_h = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    try:
        data = open(path, "rb").read()
    except OSError as e:
        fail(str(e))
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail("no PNG signature")
    pos, ihdr, idat, seen_end = 8, None, b"", False
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0]
        if zlib.crc32(ctype + body) != crc:
            fail(f"bad CRC in chunk {ctype!r}")
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat += body
        elif ctype == b"IEND":
            seen_end = True
            break
        pos += 12 + length
    if not ihdr or not seen_end:
        fail("missing IHDR or IEND")
    width, height, depth, colour, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace != 0:
        fail(f"unexpected format (depth {depth}, colour type {colour}, interlace {interlace})")
    if width < min_w or height < min_h:
        fail(f"{width}x{height} is smaller than {min_w}x{min_h}")
    raw = zlib.decompress(idat)
    stride = width * channels
    if len(raw) != height * (stride + 1):
        fail("image data has the wrong size")
    prev = bytearray(stride)
    colours = {}
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                line[i] = (line[i] + paeth(a, b, c)) & 255
            elif ftype != 0:
                fail(f"unknown filter {ftype}")
        for x in range(0, stride, channels):
            px = bytes(line[x:x + channels])
            colours[px] = colours.get(px, 0) + 1
        prev = line
    # Not blank: text and widgets give many colours (antialiasing) and the most
    # common colour (the background) does not cover everything.
    background = max(colours.values())
    other = 1 - background / (width * height)
    if len(colours) < 16 or other < 0.005:
        fail(f"looks blank: {len(colours)} colours, {other:.2%} of pixels off the background")
    print(f"ok: {width}x{height}, {len(colours)} colours, {other:.1%} of pixels off the background")


main()
