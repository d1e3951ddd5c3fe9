"""The binary formats, offline: raw elements and safetensors files, with and without numpy."""

import array
import json
import struct
import unittest

from adam_api import wire

from _support import need_numpy, numpy as np


class WireTest(unittest.TestCase):
    def test_raw_elements_are_little_endian_in_the_given_order(self):
        self.assertEqual(wire.encode_raw([1.0, -2.0]), (struct.pack("<2f", 1.0, -2.0), "float32"))
        self.assertEqual(wire.encode_raw([1.0], "float64"), (struct.pack("<d", 1.0), "float64"))
        self.assertEqual(wire.encode_raw(array.array("d", [0.5])), (struct.pack("<d", 0.5), "float64"))
        self.assertEqual(wire.encode_raw(b"\x00\x00", "bfloat16"), (b"\x00\x00", "bfloat16"))
        self.assertEqual(wire.raw_content_type("bfloat16"), "application/octet-stream; dtype=bfloat16")
        self.assertEqual(wire.raw_content_type(None), "application/octet-stream")

    def test_a_safetensors_file_keeps_the_order_given_and_reads_back(self):
        data = wire.dump_safetensors({"params/b": [[1.0, 2.0]], "params/a": 3.0, "grads/a": wire.Tensor("F64", [], struct.pack("<d", 0.1))}, {"step": "7"})
        (n,) = struct.unpack_from("<Q", data)
        self.assertEqual(n % 8, 0, "the data starts 8-byte aligned")
        header = json.loads(data[8:8 + n])
        self.assertEqual(header["__metadata__"], {"step": "7"})
        self.assertEqual(header["params/b"], {"dtype": "F32", "shape": [1, 2], "data_offsets": [0, 8]})
        self.assertEqual(header["params/a"], {"dtype": "F32", "shape": [], "data_offsets": [8, 12]})
        self.assertEqual(header["grads/a"]["dtype"], "F64")
        tensors, meta = wire.load_safetensors(data)
        self.assertEqual(list(tensors), ["params/b", "params/a", "grads/a"])
        self.assertEqual(meta, {"step": "7"})
        self.assertEqual(tensors["params/b"].tolist(), [[1.0, 2.0]])
        self.assertEqual(tensors["params/a"].tolist(), 3.0)
        self.assertEqual(tensors["grads/a"].tolist(), 0.1)
        bf16 = wire.Tensor("BF16", [2], struct.pack("<f", 1.5)[2:] + struct.pack("<f", -2.0)[2:])
        self.assertEqual(bf16.tolist(), [1.5, -2.0])

    def test_bad_files_are_refused(self):
        with self.assertRaises(ValueError):
            wire.load_safetensors(b"\x01")
        with self.assertRaises(ValueError):
            wire.load_safetensors(struct.pack("<Q", 100) + b"{}")
        with self.assertRaises(ValueError):
            wire.dump_safetensors({"x": [[1.0], [2.0, 3.0]]})

    @need_numpy
    def test_numpy_arrays_go_as_their_bytes(self):
        a = np.arange(6, dtype="<f4").reshape(2, 3)
        self.assertEqual(wire.encode_raw(a), (a.tobytes(), "float32"))
        self.assertEqual(wire.encode_raw(a.T)[0], np.ascontiguousarray(a.T).tobytes())
        self.assertEqual(wire.encode_raw(a, "float64")[0], a.astype("<f8").tobytes())
        tensors, _ = wire.load_safetensors(wire.dump_safetensors({"w": a, "s": np.float64(2.5)}, dtype="float64"))
        self.assertTrue(np.array_equal(tensors["w"].numpy(), a))
        self.assertEqual(tensors["w"].numpy().dtype, np.float64)
        self.assertEqual(tensors["s"].numpy().shape, ())


if __name__ == "__main__":
    unittest.main()
