#!/usr/bin/env python3
"""Writes a small MNIST-format dataset (IDX files), for machines that cannot
download the real one. Each class is a distinct blob pattern plus noise, so a
model can learn it in one epoch.

Usage: make_mnist.py DATA_DIR [--train N] [--test N] [--name MNIST|FashionMNIST]
Writes DATA_DIR/<name>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, the
files torchvision's datasets.MNIST / FashionMNIST read when present.
"""
import argparse
import os
import random
import struct


def image(label, rng):
    px = bytearray(28 * 28)
    # A class-specific bright square at one of ten positions, plus noise.
    r0, c0 = 3 + (label // 5) * 12, 2 + (label % 5) * 5
    for r in range(r0, r0 + 10):
        for c in range(c0, c0 + 5):
            px[r * 28 + c] = 200 + rng.randrange(56)
    for _ in range(40):
        px[rng.randrange(28 * 28)] = rng.randrange(120)
    return bytes(px)


def write(raw, prefix, n, rng):
    labels = [i % 10 for i in range(n)]
    rng.shuffle(labels)
    with open(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), "wb") as f:
        f.write(struct.pack(">IIII", 2051, n, 28, 28))
        for lab in labels:
            f.write(image(lab, rng))
    with open(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), "wb") as f:
        f.write(struct.pack(">II", 2049, n))
        f.write(bytes(labels))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data_dir")
    p.add_argument("--train", type=int, default=640)
    p.add_argument("--test", type=int, default=200)
    p.add_argument("--name", default="MNIST", choices=["MNIST", "FashionMNIST"])
    a = p.parse_args()
    raw = os.path.join(a.data_dir, a.name, "raw")
    os.makedirs(raw, exist_ok=True)
    rng = random.Random(1)
    write(raw, "train", a.train, rng)
    write(raw, "t10k", a.test, rng)
    print(f"wrote {a.train} training and {a.test} test images to {raw}")


if __name__ == "__main__":
    main()
