# Building and installing rumphijack (GNU make 4.3 or newer).
#
#   make                            release build, man pages and shell completions
#   make install [PREFIX=/usr/local] [DESTDIR=/staging/root]
#   make uninstall [PREFIX=...] [DESTDIR=...]
#   make clean                      removes the generated files (cargo clean: the build)
#
# `make install` builds only what is missing, so `make` as yourself and then
# `sudo make install` never runs cargo as root; run `make` again after changing the sources.
#
# Installed layout (the supervisor finds the library as ../lib/librumphijack.so relative to
# its own executable, so keep LIBDIR at PREFIX/lib or pass --library):
#
#   PREFIX/bin/rumphijack, PREFIX/bin/rump_server
#   PREFIX/lib/librumphijack.so
#   PREFIX/share/man/man1/rumphijack.1, man8/rump_server.8, man3/librumphijack.3
#   PREFIX/share/bash-completion/completions/{rumphijack,rump_server}
#   PREFIX/share/zsh/site-functions/{_rumphijack,_rump_server}
#   PREFIX/share/fish/vendor_completions.d/{rumphijack,rump_server}.fish
#
# PROFILE=debug installs the debug build instead (the test suite does, to avoid a release
# build); BUILD_DIR and GEN_DIR say where the built and the generated files are.

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
DATADIR ?= $(PREFIX)/share
MANDIR ?= $(DATADIR)/man
BASH_COMPLETION_DIR ?= $(DATADIR)/bash-completion/completions
ZSH_COMPLETION_DIR ?= $(DATADIR)/zsh/site-functions
FISH_COMPLETION_DIR ?= $(DATADIR)/fish/vendor_completions.d

CARGO ?= cargo
PROFILE ?= release
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
BUILD_DIR ?= $(TARGET_DIR)/$(PROFILE)
GEN_DIR ?= $(BUILD_DIR)/dist
INSTALL ?= install

ifeq ($(PROFILE),release)
CARGO_PROFILE := --release
else ifeq ($(PROFILE),debug)
CARGO_PROFILE :=
else
$(error PROFILE must be release or debug, not '$(PROFILE)')
endif

PACKAGES := -p rumphijack -p rump-server -p rumphijack-preload -p rumphijack-dist
BINARIES := $(BUILD_DIR)/rumphijack $(BUILD_DIR)/rump_server
LIBRARY := $(BUILD_DIR)/librumphijack.so
GENERATOR := $(BUILD_DIR)/rumphijack-dist
# One of the generated files stands for all of them.
GENERATED := $(GEN_DIR)/man/rumphijack.1

.PHONY: all build install uninstall clean

all: build
	$(GENERATOR) $(GEN_DIR)

build:
	$(CARGO) build $(CARGO_PROFILE) $(PACKAGES)

$(BINARIES) $(LIBRARY) $(GENERATOR) &:
	$(CARGO) build $(CARGO_PROFILE) $(PACKAGES)

$(GENERATED): $(GENERATOR) dist/man/librumphijack.3
	$(GENERATOR) $(GEN_DIR)

install: $(BINARIES) $(LIBRARY) $(GENERATED)
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 $(DESTDIR)$(MANDIR)/man8 \
		$(DESTDIR)$(BASH_COMPLETION_DIR) $(DESTDIR)$(ZSH_COMPLETION_DIR) \
		$(DESTDIR)$(FISH_COMPLETION_DIR)
	$(INSTALL) -m 755 $(BINARIES) $(DESTDIR)$(BINDIR)/
	$(INSTALL) -m 644 $(LIBRARY) $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 644 $(GEN_DIR)/man/rumphijack.1 $(DESTDIR)$(MANDIR)/man1/
	$(INSTALL) -m 644 $(GEN_DIR)/man/librumphijack.3 $(DESTDIR)$(MANDIR)/man3/
	$(INSTALL) -m 644 $(GEN_DIR)/man/rump_server.8 $(DESTDIR)$(MANDIR)/man8/
	$(INSTALL) -m 644 $(GEN_DIR)/completions/bash/rumphijack \
		$(GEN_DIR)/completions/bash/rump_server $(DESTDIR)$(BASH_COMPLETION_DIR)/
	$(INSTALL) -m 644 $(GEN_DIR)/completions/zsh/_rumphijack \
		$(GEN_DIR)/completions/zsh/_rump_server $(DESTDIR)$(ZSH_COMPLETION_DIR)/
	$(INSTALL) -m 644 $(GEN_DIR)/completions/fish/rumphijack.fish \
		$(GEN_DIR)/completions/fish/rump_server.fish $(DESTDIR)$(FISH_COMPLETION_DIR)/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/rumphijack $(DESTDIR)$(BINDIR)/rump_server \
		$(DESTDIR)$(LIBDIR)/librumphijack.so \
		$(DESTDIR)$(MANDIR)/man1/rumphijack.1 $(DESTDIR)$(MANDIR)/man3/librumphijack.3 \
		$(DESTDIR)$(MANDIR)/man8/rump_server.8 \
		$(DESTDIR)$(BASH_COMPLETION_DIR)/rumphijack $(DESTDIR)$(BASH_COMPLETION_DIR)/rump_server \
		$(DESTDIR)$(ZSH_COMPLETION_DIR)/_rumphijack $(DESTDIR)$(ZSH_COMPLETION_DIR)/_rump_server \
		$(DESTDIR)$(FISH_COMPLETION_DIR)/rumphijack.fish \
		$(DESTDIR)$(FISH_COMPLETION_DIR)/rump_server.fish

clean:
	rm -rf $(GEN_DIR)
