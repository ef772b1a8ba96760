"""Writes the small Parquet fixtures of loader-parquet's unit tests.

Run from the repository root with any Python that has pyarrow:
    .venv/bin/python plugins/loader-parquet/tests/make_fixtures.py
The files are committed; rerun only to change them.
"""

import os

import pyarrow as pa
import pyarrow.parquet as pq

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
PNG = bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 1, 2, 3])
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def easyr1():
    # EasyR1 / R1-V: problem with <image> placeholders, answer, images as HF Image structs.
    # Two row groups of 2 rows, snappy: random access crosses row groups.
    table = pa.table(
        {
            "problem": ["<image>What is x?", "Solve 2+2.", "<image> vs <image>: which is larger?", "<image>Area?"],
            "answer": ["3", "4", "A", "12"],
            "images": pa.array(
                [
                    [{"bytes": PNG, "path": None}],
                    [],
                    [{"bytes": None, "path": "imgs/a.png"}, {"bytes": PNG[:4], "path": "b.png"}],
                    [{"bytes": PNG, "path": None}],
                ],
                type=pa.list_(IMAGE),
            ),
            "difficulty": [1, 2, 3, 4],
        }
    )
    pq.write_table(table, os.path.join(OUT, "easyr1.parquet"), row_group_size=2, compression="snappy")


def verl():
    # verl: prompt as a chat list, reward_model.ground_truth, images, data_source. gzip.
    msg = pa.struct([("role", pa.string()), ("content", pa.string())])
    table = pa.table(
        {
            "data_source": ["geo3k", "geo3k", "geo3k"],
            "prompt": pa.array(
                [
                    [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": "<image>Find the angle."}],
                    [{"role": "user", "content": "What is 7*6?"}],
                    [{"role": "user", "content": "<image><image>Compare."}],
                ],
                type=pa.list_(msg),
            ),
            "images": pa.array(
                [[{"bytes": PNG, "path": None}], [], [{"bytes": PNG, "path": None}, {"bytes": PNG, "path": None}]],
                type=pa.list_(IMAGE),
            ),
            "reward_model": pa.array(
                [{"ground_truth": "60", "style": "rule"}, {"ground_truth": "42", "style": "rule"}, {"ground_truth": "B", "style": "rule"}],
                type=pa.struct([("ground_truth", pa.string()), ("style", pa.string())]),
            ),
        }
    )
    pq.write_table(table, os.path.join(OUT, "verl.parquet"), compression="gzip")
    # Row 2 has two placeholders but one image: an error naming the row, or skipped.
    bad = table.set_column(2, "images", pa.array(
        [[{"bytes": PNG, "path": None}], [], [{"bytes": PNG, "path": None}]], type=pa.list_(IMAGE)))
    bad = bad.slice(1, 2)
    pq.write_table(bad, os.path.join(OUT, "verl-bad.ignored"), compression="gzip")


def lz4_brotli():
    # The other codecs the plugin is built with.
    t = pa.table({"problem": ["1+1?", "2+3?"], "answer": ["2", "5"]})
    pq.write_table(t, os.path.join(OUT, "plain-lz4.parquet"), compression="lz4")
    pq.write_table(t, os.path.join(OUT, "plain-brotli.parquet"), compression="brotli")
    # zstd (C, compiled for wasm32-wasip2 by clang); not named *.parquet so the directory tests skip it.
    pq.write_table(t, os.path.join(OUT, "plain-zstd.ignored"), compression="zstd")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    easyr1()
    verl()
    lz4_brotli()
    print("wrote", sorted(os.listdir(OUT)))
