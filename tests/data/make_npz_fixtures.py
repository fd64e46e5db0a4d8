#!/usr/bin/python3
"""Fixtures for tests/test_io.cpp: .npy/.npz files written by numpy (and one by PyTorch).

Run with Debian's system python (numpy and torch installed there):

    /usr/bin/python3 tests/data/make_npz_fixtures.py            # (re)writes the fixtures
    /usr/bin/python3 tests/data/make_npz_fixtures.py --verify DIR

--verify checks, with np.load, the files recur's test suite writes when run as
    RECUR_IO_EXPORT_DIR=DIR recur_tests --run_test=io
(names, shapes, dtypes, values, and that recur's .npy bytes equal numpy's own).

The fixtures are deterministic (fixed values, torch.manual_seed), so rerunning the script
rewrites the same arrays; zip timestamps may differ.
"""
import io
import os
import struct
import sys
import zipfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def out(name):
    return os.path.join(HERE, name)


# Values shared with test_io.cpp (keep in sync).
F2x3 = np.array([[0.1, -2.5, 3.0], [1e-300, 4.25, -0.0]])
VEC = np.arange(5) * 1.5 - 2.0
SCALAR = np.array(3.25)
CUBE = np.arange(24.0).reshape(2, 3, 4) * 0.5
GRID32 = (np.arange(12, dtype=np.float32).reshape(3, 4) - 4) / 8


def npy_bytes(a, version=None):
    b = io.BytesIO()
    if version is None:
        np.save(b, a)
    else:
        np.lib.format.write_array(b, a, version=version)
    return b.getvalue()


def write_npy_fixtures():
    np.save(out("np_f32_2x3.npy"), F2x3.astype(np.float32))
    np.save(out("np_f64_2x3.npy"), F2x3)
    np.save(out("np_f64_vec.npy"), VEC)
    np.save(out("np_f64_scalar.npy"), SCALAR)
    np.save(out("np_f64_empty.npy"), np.zeros((0, 3)))
    np.save(out("np_f64_fortran.npy"), np.asfortranarray(CUBE))
    np.save(out("np_f32_fortran.npy"), np.asfortranarray(GRID32))
    with open(out("np_f64_v2.npy"), "wb") as f:
        f.write(npy_bytes(CUBE, version=(2, 0)))
    with open(out("np_f32_v3.npy"), "wb") as f:
        f.write(npy_bytes(GRID32, version=(3, 0)))
    # dtypes recur must reject
    np.save(out("np_i64.npy"), np.arange(6, dtype=np.int64).reshape(2, 3))
    np.save(out("np_f8_be.npy"), VEC.astype(">f8"))
    np.save(out("np_c16.npy"), VEC.astype(np.complex128))
    np.save(out("np_structured.npy"), np.zeros(2, dtype=[("a", "<f4"), ("b", "<f8")]))
    for name in ["np_f64_fortran.npy", "np_f32_fortran.npy"]:
        assert b"'fortran_order': True" in open(out(name), "rb").read(128), name


def write_npz_fixtures():
    arrays = dict(a=F2x3.astype(np.float32), b=VEC, c=SCALAR, d=np.asfortranarray(CUBE))
    np.savez(out("np_savez.npz"), **arrays)
    np.savez_compressed(out("np_savez_compressed.npz"), **arrays)
    with zipfile.ZipFile(out("np_savez_compressed.npz")) as z:
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
    np.savez(out("np_savez_int.npz"), w=VEC, ids=np.arange(3, dtype=np.int64))
    # integer arrays, read with T = std::int64_t
    ints = {t: np.array([-3, 0, 7], dtype=t) for t in ["i1", "i2", "i4", "i8"]}
    ints.update({t: np.array([0, 7, 200], dtype=t) for t in ["u1", "u2", "u4", "u8"]})
    np.savez(out("np_ints.npz"), **ints)
    np.save(out("np_u64_big.npy"), np.array([1, 2**63], dtype=np.uint64))

    # A member whose header claims more data than it holds (CRCs are valid).
    lying = bytearray(npy_bytes(np.zeros((100, 100))))
    good = npy_bytes(VEC)
    hl = struct.unpack("<H", good[8:10])[0]
    with zipfile.ZipFile(out("lying_header.npz"), "w") as z:
        z.writestr("w.npy", lying[: 10 + hl] + good[10 + hl :])  # (100, 100) header, 5 doubles
    # A member with more data than its header's shape.
    with zipfile.ZipFile(out("extra_data.npz"), "w") as z:
        z.writestr("w.npy", npy_bytes(np.zeros(2)) + b"\0" * 24)
    # A member that is not an .npy file.
    with zipfile.ZipFile(out("not_npy_member.npz"), "w") as z:
        z.writestr("w.npy", npy_bytes(VEC))
        z.writestr("readme.txt", b"hello")


def write_torch_fixture():
    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    sd = lstm.state_dict()
    np.savez(out("torch_lstm.npz"), **{k: v.numpy() for k, v in sd.items()})
    print("torch_lstm.npz:")
    for k, v in sd.items():
        print(f"  {k} {tuple(v.shape)}")
    picks = [("weight_ih_l0", (0, 0)), ("weight_hh_l1_reverse", (15, 3)), ("bias_hh_l1", (15,)),
             ("weight_ih_l1", (7, 6))]
    print("values for test_io.cpp (float32, printed exactly):")
    for k, idx in picks:
        print(f"  {k}{list(idx)} = {np.float32(sd[k].numpy()[idx])!r}")


def verify(d):
    """Opens what recur wrote (see test_io.cpp, RECUR_IO_EXPORT_DIR) with numpy."""
    ok = True

    def check(cond, what):
        nonlocal ok
        print(("ok   " if cond else "FAIL ") + what)
        ok = ok and bool(cond)

    for name, expect in [("recur_f32_2x3.npy", F2x3.astype(np.float32)), ("recur_f64_2x3.npy", F2x3),
                         ("recur_f64_scalar.npy", SCALAR), ("recur_f64_vec.npy", VEC)]:
        path = os.path.join(d, name)
        a = np.load(path)
        check(a.dtype == expect.dtype and a.shape == expect.shape and np.array_equal(a, expect),
              f"{name}: dtype {a.dtype}, shape {a.shape}")
        check(open(path, "rb").read() == npy_bytes(expect), f"{name}: bytes equal np.save's")

    for name, dtype in [("recur_module_f32.npz", np.float32), ("recur_module_f64.npz", np.float64)]:
        z = np.load(os.path.join(d, name))
        expect_names = ["weight_ih_l0", "bias_ih_l0", "cell.weight", "cell.bias"]
        check(list(z.files) == expect_names, f"{name}: names {list(z.files)}")
        shapes = {"weight_ih_l0": (4, 3), "bias_ih_l0": (4,), "cell.weight": (2, 2), "cell.bias": (2,)}
        for k in expect_names:
            a = z[k]
            n = int(np.prod(shapes[k]))
            expect = (np.arange(n) * 0.25 - 1.0).astype(dtype).reshape(shapes[k])
            check(a.dtype == dtype and a.shape == shapes[k] and np.array_equal(a, expect), f"{name}[{k}]")
        with zipfile.ZipFile(os.path.join(d, name)) as zf:
            check(zf.testzip() is None, f"{name}: zip CRCs")
    print("all ok" if ok else "FAILED")
    return ok


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--verify":
        sys.exit(0 if verify(sys.argv[2]) else 1)
    write_npy_fixtures()
    write_npz_fixtures()
    write_torch_fixture()


if __name__ == "__main__":
    main()
