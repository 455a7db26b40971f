# The two commands of the README. Each sets the machine up first (Debian
# packages, hugepages; see scripts/setup.sh), so both work on a fresh Debian 12.
.PHONY: all setup build test demo clean

all: build

setup:
	scripts/setup.sh

build: setup
	cargo build --release --workspace --locked

test: setup
	scripts/test.sh

demo: setup
	scripts/demo.sh

clean:
	cargo clean
