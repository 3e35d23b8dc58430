# redis-audit-proxy — the two set-up commands are `make run` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
REDIS_PORT ?= 6379
CONFIG ?= proxy.toml.example

.PHONY: run test bench fuzz fuzz-smoke fuzz-differential soak mutants fmt lint doc deps redis clean
FUZZ_SECONDS ?= 600
FUZZ_JOBS ?= 1
FUZZ_RUNS ?=

## Start the proxy on 127.0.0.1:6380 in front of a redis-server on 127.0.0.1:$(REDIS_PORT),
## installing and starting one if none answers there.
run: deps redis
	$(CARGO) run --release -- --config $(CONFIG)

## Install what the tests need, then run formatting, lints, unit and integration tests, the docs
## build and a 30-second smoke of every fuzz target.
test: deps
	@bash scripts/ensure-prometheus.sh
	@bash scripts/ensure-redis-py.sh
	@bash scripts/ensure-rsyslog.sh
	@bash scripts/ensure-chromium.sh
	@bash scripts/ensure-upstreams.sh
	python3 scripts/check-layers.py
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) test --all-targets
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --document-private-items --quiet
	$(MAKE) --no-print-directory fuzz-smoke FUZZ_JOBS=2

## Throughput, latency and CPU per request against Redis directly, through the proxy and through
## HAProxy and twemproxy; regenerates docs/benchmarks.md's results (see that file); then a Redis
## Cluster through per-node sidecars against the same cluster directly (scripts/bench_cluster.py).
bench: deps
	$(CARGO) bench --bench hot_path
	python3 scripts/bench.py
	python3 scripts/bench_cluster.py

## Every fuzz target (fuzz/, cargo-fuzz) for FUZZ_SECONDS each (or FUZZ_RUNS executions each),
## FUZZ_JOBS at a time; figures in docs/reliability.md. fuzz-smoke: 30 s per target (part of
## make test).
fuzz:
	@bash scripts/ensure-cargo-fuzz.sh
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_RUNS=$(FUZZ_RUNS) FUZZ_JOBS=$(FUZZ_JOBS) bash scripts/fuzz.sh

fuzz-smoke:
	@bash scripts/ensure-cargo-fuzz.sh
	FUZZ_SECONDS=30 FUZZ_RUNS= FUZZ_JOBS=$(FUZZ_JOBS) bash scripts/fuzz.sh

## Differential fuzzing against Redis (tests/it/differential_fuzz/): DIFFERENTIAL_FUZZ_STREAMS
## random request streams, sent directly and through the proxy, with a fresh seed (printed).
DIFFERENTIAL_FUZZ_STREAMS ?= 100000
fuzz-differential: deps
	DIFFERENTIAL_FUZZ_STREAMS=$(DIFFERENTIAL_FUZZ_STREAMS) \
	  DIFFERENTIAL_FUZZ_SEED=$${DIFFERENTIAL_FUZZ_SEED:-$$(date +%s%N)} \
	  $(CARGO) test --test it differential_fuzz -- --exact differential_fuzz::differential_fuzz --nocapture

## Mutation testing of the security core (issue 19 item 5) with cargo-mutants (crates.io): every
## mutant of MUTANTS_FILES against the unit tests; results in target/mutants/mutants.out
## (caught.txt, missed.txt, ...), figures in docs/reliability.md. Narrow it with e.g.
## `make mutants MUTANTS_FILES=src/audit/redact.rs`. `-C --lib` builds only the unit-test binary per
## mutant (after `--` it would narrow the test run, but every test target would still be built).
MUTANTS_FILES ?= src/acl/** src/proxy/gate/** src/resp/** src/audit/redact.rs
mutants:
	@$(CARGO) mutants --version >/dev/null 2>&1 || $(CARGO) install --locked cargo-mutants
	$(CARGO) mutants $(foreach f,$(MUTANTS_FILES),-f '$(f)') -C --lib --output target/mutants

## The soak with faults (tests/it/soak/, docs/reliability.md): SOAK_CLIENTS clients for
## SOAK_SECONDS through the binary while Redis restarts, freezes and pauses, the audit disk fills,
## the syslog collector stops and SIGHUP reloads; then its invariants. Loopback only; needs root
## (a tmpfs) and open files for two sockets per client (SOAK_POOL=shared: about one).
## `make test` runs the same test at 60 s and 1,000 clients.
SOAK_SECONDS ?= 600
SOAK_CLIENTS ?= 10000
SOAK_POOL ?= dedicated
soak: deps
	@bash scripts/ensure-rsyslog.sh
	SOAK_SECONDS=$(SOAK_SECONDS) SOAK_CLIENTS=$(SOAK_CLIENTS) SOAK_POOL=$(SOAK_POOL) \
	  $(CARGO) test --test it soak::soak_with_faults -- --exact --nocapture

deps:
	@bash scripts/ensure-redis.sh

redis: deps
	@if redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1; then \
	  echo "redis-server already answers on 127.0.0.1:$(REDIS_PORT)"; \
	else \
	  mkdir -p data && redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --daemonize yes \
	    --dir "$(CURDIR)/data" --logfile "$(CURDIR)/data/redis.log" --save "" --appendonly no && \
	  for i in $$(seq 50); do redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.1; done && \
	  echo "started redis-server on 127.0.0.1:$(REDIS_PORT) (log: data/redis.log)"; \
	fi

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) clippy --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

clean:
	$(CARGO) clean
