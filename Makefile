# bookbroker — the two commands of the README's Quick start, and their parts.
#
#   make demo   build and run the embedded demo (simulated sellers in-process)
#   make test   install what is missing, then format check, clippy, build, every test
#   make cluster-demo   three engine nodes behind HAProxy on loopback (README, "Running
#                       a cluster"); make cluster-drill also runs the failover drill
#
# Both work on a fresh Debian machine with a Rust toolchain: `deps` installs the
# system packages the build needs when they are missing (as root, or with sudo).

CARGO ?= cargo

# RocksDB's C++ takes minutes to compile. clippy (check mode) and a normal build resolve
# librocksdb-sys's build dependencies into different units, so cargo compiles it twice;
# with ccache (installed by `deps`) the second compile is all cache hits.
export CC := ccache cc
export CXX := ccache c++

.PHONY: demo test deps lint build unit-and-integration bench-check api-fuzz fuzz cluster-demo cluster-drill

# The demo runs the same debug build as `make test` (one RocksDB compile shared by both
# commands on a fresh machine; a release build would compile its C++ again). Benchmarks
# and the cluster demo build the release profile themselves.
demo: deps build
	./target/debug/bookbroker demo

test: deps lint build unit-and-integration bench-check api-fuzz

cluster-demo: deps
	$(CARGO) build --release --workspace --bins --locked
	bash scripts/cluster-demo.sh

cluster-drill: deps
	$(CARGO) build --release --workspace --bins --locked
	bash scripts/cluster-demo.sh --drill

deps:
	@bash scripts/ensure-deps.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# The integration tests start the real binaries, so build them first. Every cargo
# command here selects the whole workspace and all its targets, so dependency features
# resolve the same way each time and RocksDB (minutes of C++) is compiled only once.
build:
	$(CARGO) build --workspace --all-targets --locked

unit-and-integration: build
	$(CARGO) test --workspace --locked

# Schemathesis against docs/openapi.yaml and the demo engine: no 5xx, no answer that
# breaks the schema, no undocumented status. Installs schemathesis on first use.
api-fuzz: build
	bash scripts/api-fuzz.sh

# Coverage-guided fuzzing of every decoder, FUZZ_SECONDS (600) per target; nightly and
# cargo-fuzz are installed on first use. `make test` only replays the corpora (stable).
fuzz: deps
	bash scripts/fuzz.sh

# Compile every benchmark and run each once in test mode, so benches cannot rot.
bench-check:
	@if ls bench/benches/*.rs >/dev/null 2>&1; then \
		$(CARGO) test --workspace --benches --locked; \
	else echo "bench-check: no benchmarks yet"; fi
