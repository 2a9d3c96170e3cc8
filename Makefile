# The README's two commands are `make run` and `make test`.
GO ?= go

.PHONY: run test build robustness fuzz bench

build:
	$(GO) build -o bin/cairn ./cmd/cairn

run: build
	./bin/cairn

# The whole test suite, with the race detector (unit, integration, e2e).
test:
	$(GO) test -race -count=1 -timeout 25m ./...

# The long robustness matrix: every fault kind x every traffic kind, on 3
# members and on 1 (see docs/robustness.md). ROBUSTNESS_DURATION is the
# traffic time of one run; ROBUSTNESS_FAULTS / ROBUSTNESS_TRAFFIC select
# (comma-separated names); ROBUSTNESS_SERVER_BINARY=/path/to/etcd runs it
# against etcd. The short version runs in `make test` / go test ./...
ROBUSTNESS_DURATION ?= 10s
robustness:
	ROBUSTNESS_LONG=1 ROBUSTNESS_DURATION=$(ROBUSTNESS_DURATION) bash -o pipefail -c \
	  "$(GO) test -count=1 -timeout 6h -v -run 'TestRobustnessLong' ./tests/robustness/ 2>&1 | \
	   tee robustness.log | grep --line-buffered -E -e '--- (PASS|FAIL)' -e 'violation|robustness matrix:|kept in|^(FAIL|ok) '"

# Fuzz every decoder of untrusted bytes for FUZZTIME each (default 30s).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run XXX -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

# Side-by-side benchmark against real etcd (see bench/README.md).
bench:
	bash bench/run.sh
