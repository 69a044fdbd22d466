"""The allocator setting (minimagic/allocator.py) on vs off: encoding Moving-digit clips with the shipped VAE.

    PYTHONPATH=. python bench/allocator.py [--clips 512] [--repeats 2]

Each measurement is a fresh process (the setting is per process), on and off alternating, one thread:
clips per second, minor page faults, and user / system CPU seconds; then the on/off speed ratio.
"""

import argparse
import json
import os
import subprocess
import sys

WORKER = """
import json, resource, sys, time
import torch
from minimagic import allocator
from minimagic.clips import encode_clips
from minimagic.paths import VAE_CHECKPOINT
from minimagic.vae import VAE
allocator.configure()
torch.set_num_threads(1)
vae = VAE.from_pretrained(VAE_CHECKPOINT)
before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
encode_clips(vae, "train", int(sys.argv[1]), cache_dir=None)
seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"applied": bool(allocator.applied), "clips_per_s": int(sys.argv[1]) / seconds,
                  "minor_faults": after.ru_minflt - before.ru_minflt, "user_s": after.ru_utime - before.ru_utime,
                  "sys_s": after.ru_stime - before.ru_stime}))
"""


def measure(clips: int, on: bool) -> dict:
    env = {**os.environ, "MINIMAGIC_ALLOCATOR": "1" if on else "0", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", WORKER, str(clips)], env=env, capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs = {True: [], False: []}
    for _ in range(args.repeats):
        for on in (False, True):
            runs[on].append(measure(args.clips, on))
            print(("on " if on else "off"), json.dumps({k: round(v, 2) for k, v in runs[on][-1].items()}), flush=True)
    best = {on: max(r["clips_per_s"] for r in runs[on]) for on in runs}
    print(f"encoding {args.clips} clips: {best[False]:.1f} clips/s off, {best[True]:.1f} on: "
          f"{best[True] / best[False]:.2f}x (best of {args.repeats} each)")


if __name__ == "__main__":
    main()
