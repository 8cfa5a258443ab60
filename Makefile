# klink's two everyday commands are `make demo` and `make test`.
GO ?= go

.PHONY: all build demo test vet fuzz soak bench package clean

all: build

build:
	$(GO) build -o bin/klink ./cmd/klink

# Two in-process Kafka clusters, live mirroring; Ctrl-C stops and verifies.
demo:
	$(GO) run ./cmd/klink demo

# vet + gofmt + every test under the race detector: on kfake, and on real
# Apache Kafka brokers when KLINK_KAFKA_HOME (a folder with start.sh and
# stop.sh, such as ../shared/kafka) or KLINK_TEST_SOURCE and
# KLINK_TEST_DESTINATION (bootstraps of clusters you run) are set.
test: vet
	@[ -n "$$KLINK_KAFKA_HOME$$KLINK_TEST_SOURCE" ] || echo "note: real-broker tests skipped: set KLINK_KAFKA_HOME (e.g. ../shared/kafka) or KLINK_TEST_SOURCE and KLINK_TEST_DESTINATION"
	$(GO) test -race -timeout 40m ./...

vet:
	$(GO) vet ./...
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Each fuzz target for FUZZTIME, one at a time (plain `go test`, and so
# `make test`, runs their seeds and testdata/fuzz only). An input that fails
# is written to the package's testdata/fuzz/<target>/ and fails the run.
FUZZTIME ?= 5s
FUZZMINIMIZETIME ?= 100x
FUZZ_TARGETS = \
	./replicator/batch:FuzzBatch \
	./replicator/kconn:FuzzResponse \
	./replicator/kconn:FuzzSkipTags \
	./replicator/kconn:FuzzEncodeProduce \
	./replicator/kconn:FuzzReadFetchResponse \
	./replicator:FuzzFetchToPartitions \
	./replicator:FuzzProduceAnswer \
	./config:FuzzLoad \
	./linkstate:FuzzOpen \
	./linkstate:FuzzOpenDamaged \
	./linkstate:FuzzTopicRecord

# go test -fuzz sometimes fails a run that found nothing with a bare
# "context deadline exceeded" (its coordinator racing its own -fuzztime
# deadline on a busy machine): that alone, with no failing input written,
# is reported and not counted as a failure.
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; out=$$(mktemp); \
		echo "$(GO) test -run '^\$$' -fuzz '^$$name\$$' -fuzztime $(FUZZTIME) $$pkg"; \
		if $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) $$pkg >$$out 2>&1; then \
			if grep -q 'no fuzz tests to fuzz' $$out; then echo "fuzz: $$pkg has no $$name"; rm -f $$out; exit 1; fi; \
			grep '^fuzz: elapsed' $$out | tail -n 1; tail -n 1 $$out; \
		elif grep -q 'context deadline exceeded' $$out && ! grep -q 'Failing input written' $$out; then \
			grep '^fuzz: elapsed' $$out | tail -n 1; \
			echo "fuzz: $$name: go test stopped late (context deadline exceeded) without a failing input"; \
		else \
			cat $$out; rm -f $$out; exit 1; \
		fi; \
		rm -f $$out; \
	done

# klink run SIGKILLed 50 times (KLINK_SOAK_KILLS) while producers write, on
# real brokers (KLINK_KAFKA_HOME, by default ../shared/kafka if it is there);
# every record checked afterwards.
KLINK_SOAK_KILLS ?= 50
soak:
	@home=$${KLINK_KAFKA_HOME:-$$(cd .. && pwd)/shared/kafka}; [ -x "$$home/start.sh" ] || { echo "soak: set KLINK_KAFKA_HOME to a folder with start.sh and stop.sh"; exit 1; }; \
	KLINK_KAFKA_HOME=$$home KLINK_SOAK_KILLS=$(KLINK_SOAK_KILLS) $(GO) test -count=1 -timeout 60m -v -run 'TestKillNineWhileProducing/kafka' ./cmd/klink

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
