EXTRA_DIST += bench/run.sh bench/side_by_side.py bench/bench_scenarios.py \
	bench/bench_support.py bench/README.md \
	bench/bitmap-map.sh bench/rbd.sh
EXTRA_DIST += bench/tls.sh bench/tls-read.c bench/pread-vs-io-uring.c
