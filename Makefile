# ambit: every target that needs system packages or npm modules goes through `setup`, so a fresh Debian machine
# (as root) needs nothing but `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := build

APT_PACKAGES := nftables libnftables1 iproute2 procps openssl tcpdump prometheus iperf3 wrk nginx-light libnginx-mod-stream
NODE_BIN := node_modules/.bin

.PHONY: setup build cni-plugin lint fmt test test-unit demo bench fuzz clean

setup: node_modules/.installed
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing $$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q --no-install-recommends $$missing >/dev/null || \
	    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $$missing >/dev/null; }; \
	fi

node_modules/.installed: package.json package-lock.json
	@echo "setup: installing npm dependencies"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

build: node_modules/.installed
	@$(NODE_BIN)/tsc -p .

# ambit-cni as a single executable, dist/cni/ambit-cni: runs on a node without Node.js; the image ships it and
# `ambit cni-install` copies it to the node (agent/cni/build-plugin.ts). postject's ELF writer warns about note
# sections it leaves as they are; those lines are dropped.
cni-plugin: build
	@node dist/agent/cni/build-plugin.js dist/cni 2> >(grep -v "Can't find string offset for section name" >&2)

lint: node_modules/.installed
	@$(NODE_BIN)/biome check .

fmt: node_modules/.installed
	@$(NODE_BIN)/biome check --write .

# The proxy tests hold thousands of sockets; raise the descriptor limit where the machine allows it. The audit
# fails on a high or critical advisory in a production dependency and skips with one line when the registry cannot
# answer (test/audit.ts).
test: setup build lint
	@node dist/test/audit.js
	@ulimit -n 65536 2>/dev/null || true; $(NODE_BIN)/ava

# Tests that need neither root nor the kernel: rule building, policy, identity parsing.
test-unit: build
	@$(NODE_BIN)/ava 'dist/test/unit/**/*.test.js'

demo: setup build
	@node dist/agent/demo/main.js

bench: setup build
	@node dist/test/bench/run.js $(BENCH)

# Coverage-guided fuzzing of the parsers (test/fuzz/fuzz.ts; minutes, not in CI). FUZZ picks targets (h2-session
# hpack authority csr; all by default), FUZZ_SECONDS the time per target. Findings land in test/fuzz/corpus/, which
# `make test` replays.
FUZZ_SECONDS ?= 60
fuzz: setup build
	@node dist/test/fuzz/fuzz.js $(FUZZ) --seconds $(FUZZ_SECONDS)

clean:
	rm -rf dist
