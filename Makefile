# ota-agent: `make build` for this machine, `make test` for the whole suite.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.Version=$(VERSION)
# The agent speaks HTTP/1.1 only: leave net/http's HTTP/2 out (~0.5 MB).
# No inlining (~0.7 MB) but in crypto and the runtime, which run hot.
RELEASE := -tags nethttpomithttp2 -gcflags=all=-l -gcflags=crypto/...= -gcflags=runtime/...=
GO      ?= go
export CGO_ENABLED := 0

.PHONY: build test test-arm e2e demo cross deb bench clean

build:
	$(GO) build $(RELEASE) -trimpath -ldflags "$(LDFLAGS)" -o bin/ota-agent ./cmd/ota-agent

# The whole suite: real sockets, real files, a real nginx, a real systemd
# user manager. Run as root for ownership, tmpfs and systemd tests; with
# CI=true a missing component fails its test instead of skipping it.
test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v /internal/e2e)
	$(MAKE) test-arm
	if [ -d internal/e2e ]; then $(GO) test -count=1 -timeout 60m ./internal/e2e/...; fi

# The libraries again on 32-bit ARM (Pi 1/Zero) and arm64 under qemu-user
# (Debian's qemu-user-static): catches 32-bit struct and ioctl mistakes.
ARM_PKGS := ./wire ./store ./agent ./serve ./reset ./board ./metrics
test-arm:
	GOARCH=arm GOARM=6 $(GO) test -count=1 -exec qemu-arm-static $(ARM_PKGS)
	GOARCH=arm64 $(GO) test -count=1 -exec qemu-aarch64-static $(ARM_PKGS)

# The booted-system tests alone: a systemd-nspawn container and QEMU VMs
# (root, debootstrap, qemu-system-x86; images are cached between runs).
e2e:
	$(GO) test -count=1 -timeout 60m -v ./internal/e2e/...

demo: build
	bin/ota-agent demo

# Static binaries for Raspberry Pi boards: armv6 (Pi 1, Zero), armv7 (Pi 2/3
# 32-bit OS), arm64 (Pi 3/4/5 64-bit OS).
cross:
	GOOS=linux GOARCH=arm GOARM=6 $(GO) build $(RELEASE) -trimpath -ldflags "$(LDFLAGS)" -o bin/ota-agent-linux-armv6 ./cmd/ota-agent
	GOOS=linux GOARCH=arm GOARM=7 $(GO) build $(RELEASE) -trimpath -ldflags "$(LDFLAGS)" -o bin/ota-agent-linux-armv7 ./cmd/ota-agent
	GOOS=linux GOARCH=arm64 $(GO) build $(RELEASE) -trimpath -ldflags "$(LDFLAGS)" -o bin/ota-agent-linux-arm64 ./cmd/ota-agent

# Debian packages for amd64, arm64, armhf (ARMv6: every Pi) and armel
# (ARMv5) in dist/, with nfpm pinned in go.mod (go tool nfpm); reproducible
# (packaging/deb/build). DEB_ARCHES=armhf for one.
DEB_ARCHES ?= amd64 arm64 armhf armel
deb:
	VERSION=$(VERSION) GO=$(GO) packaging/deb/build $(DEB_ARCHES)

bench: build
	bench/run

clean:
	rm -rf bin dist
