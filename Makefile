# klink's two everyday commands are `make demo` and `make test`.
GO ?= go

.PHONY: all build demo test vet bench clean

all: build

build:
	$(GO) build -o bin/klink ./cmd/klink

# Two in-process Kafka clusters, live mirroring; Ctrl-C stops and verifies.
demo:
	$(GO) run ./cmd/klink demo

# vet + gofmt + every test under the race detector.
test: vet
	$(GO) test -race -timeout 14m ./...

vet:
	$(GO) vet ./...
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# The replication benchmark: klink vs a consume/re-produce baseline.
bench:
	$(GO) run ./bench/cmd/klinkbench

clean:
	rm -rf bin
