"""Helper, not a measure: enqueue N messages with the library's batch operation."""

from __future__ import annotations

import argparse

from _common import parser, payload, run
from _libs import adapter


async def main(args: argparse.Namespace) -> None:
    lib = adapter(args.lib, args.url)
    await lib.open()
    for start in range(0, args.n, lib.fill_batch):
        await lib.enqueue_batch([payload(i) for i in range(start, min(args.n, start + lib.fill_batch))])
    await lib.close()


if __name__ == "__main__":
    p = parser(__doc__ or "")
    p.add_argument("--n", type=int, required=True)
    run(main, p.parse_args())
