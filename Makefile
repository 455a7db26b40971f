# The two commands of the README. Each sets the machine up first (Debian
# packages, hugepages; see scripts/setup.sh), so both work on a fresh Debian 12.
.PHONY: all setup build test test-core demo deb install deb-agent install-agent clean

all: build

setup:
	scripts/setup.sh

build: setup
	cargo build --release --workspace --locked

# test-core first: the pure core builds and tests before DPDK is installed.
test: test-core setup
	scripts/test.sh

test-core:
	scripts/test-core.sh

demo: setup
	scripts/demo.sh

# The Debian package (target/deb/lbd_VERSION_ARCH.deb), and the same files
# installed without one (DESTDIR=/some/root to stage them).
deb: setup
	scripts/package.sh deb

install: setup
	scripts/package.sh install $(DESTDIR)

# The feedback agent for the backends (agent/README.md): a package of its
# own, without DPDK, so no setup first.
deb-agent:
	scripts/package.sh agent-deb

install-agent:
	scripts/package.sh agent-install $(DESTDIR)

clean:
	cargo clean
