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
