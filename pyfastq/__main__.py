"""The pyfastq command: `pyfastq demo` (the end-to-end demo), `pyfastq bench` (the benchmark), `pyfastq info`,
`pyfastq gpu-check` (every check of the GPU paths, where there is a GPU)."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyfastq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a small Keras model fed by Python producers")
    demo.add_argument("--examples", type=int, default=20_000)
    demo.add_argument("--batch-size", type=int, default=64)
    demo.add_argument("--workers", type=int, default=2)
    demo.add_argument("--backend", choices=["auto", "native", "python"], default="auto")
    demo.add_argument("--mode", choices=["thread", "process", "ray"], default="thread",
                      help="producer threads, worker processes writing into shared memory (native backend), "
                           "or Ray actors (pip install 'pyfastq[ray]'; RAY_ADDRESS names a cluster, else a local Ray)")
    demo.add_argument("--log-dir", help="also write the queue monitor's TensorBoard scalars here")
    sub.add_parser("info", help="print versions and whether the native backend loads")
    # Its options are its own (pyfastq bench --help lists them): everything after "bench" goes to it.
    sub.add_parser("bench", help="measure pyfastq against from_generator, numpy_function and FIFOQueue", add_help=False)
    sub.add_parser("gpu-check", help="run every check of the GPU paths, on a machine with a GPU", add_help=False)
    args, rest = parser.parse_known_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.command == "bench":
        from .bench.run import main as bench_main

        return bench_main(rest)
    if args.command == "gpu-check":
        from .bench.gpu_check import main as gpu_check_main

        return gpu_check_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")

    import pyfastq

    if args.command == "info":
        import tensorflow as tf

        why = pyfastq.native_unavailable()
        native = "available" if why is None else why
        print(f"pyfastq {pyfastq.__version__}, TensorFlow {tf.__version__}, native backend: {native}")
        return 0 if why is None else 1
    if args.mode == "ray":
        from .producer import _ray_mode

        try:
            _ray_mode()  # Producer's own check, here before TensorFlow loads and a queue is made
        except ImportError as e:
            parser.error(str(e))
    from .demo import main as demo_main

    demo_main(args.examples, args.batch_size, args.workers, args.backend, args.mode, args.log_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
