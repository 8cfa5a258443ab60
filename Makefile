# klink's two everyday commands are `make demo` and `make test`.
GO ?= go

.PHONY: all build demo test vet bench package clean

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

# The Debian package (dpkg-deb): binary, unit, default config, klink user.
VERSION ?= $(shell git describe --tags --always 2>/dev/null || echo 0.0.0)
package:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/klink ./cmd/klink
	systemd/build-deb bin/klink 0.0.0+$(VERSION) bin

clean:
	rm -rf bin
