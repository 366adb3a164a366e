# shellcheck shell=bash
# rigkeeper read-only guard for runs on a real GPU server. Source it, then:
#
#   rk_guard_install GUARD_DIR LOG     # writes the wrappers, puts GUARD_DIR first in PATH, self-tests
#
# Every wrapper refuses (exit 97, a "REFUSED:" line in LOG) the calls that change the machine and
# passes the rest to the real tool, logging "passed: ...". Guarded:
#   nvidia-smi           state-changing arguments (-pm -pl -ac -rac -lgc -rgc -lmc -rmc -r -c -mig -e
#                        -am -caa --gom and long forms)
#   setpci               any register write (an argument with '=')
#   modprobe             anything but -n/--dry-run, --show-depends, -c/--showconfig, -V, -R
#   rmmod insmod         always
#   reboot shutdown poweroff halt kexec telinit nvidia-persistenced update-initramfs update-grub
#                        grub-install grub-mkconfig mokutil-import: always
#   systemctl            anything but status/show/cat/is-*/list-*/--version
#   apt apt-get aptitude only queries (apt: list/show/search/policy/depends/rdepends/madison;
#                        apt-get: -s/--simulate/--dry-run/--just-print/--no-act, check, changelog)
#   apt-mark             only showhold/showmanual/showauto/showinstall/showremove/showpurge
#   dpkg                 only queries (-l -L -s -S -p -C --audit --get-selections --compare-versions
#                        --print-architecture --print-foreign-architectures --version and long forms)
#   snap pip pip3        only list/info/show/freeze/--version
# Absolute paths bypass PATH: the scripts using this guard also check that the tools they expect
# went through it (a "passed:" line), and read the GPU state before and after.

# The repository is the collection rigkeeper.gpu: ansible.cfg finds it through the link ./rk makes
# (.cache does not travel to a lent server, so each script makes it).
rk_link_collection() {
  local link="$1/.cache/collections/ansible_collections/rigkeeper/gpu"
  [ -L "$link" ] || { mkdir -p "$(dirname "$link")"; ln -sfn ../../../.. "$link"; }
}

rk_guard_install() {
  local dir=$1 log=$2
  mkdir -p "$dir"
  : > "$log"
  local realpath_clean
  # PATH without the guard, for finding the real tools
  realpath_clean=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$dir" | paste -sd: -)
  local t
  for t in nvidia-smi setpci modprobe rmmod insmod reboot shutdown poweroff halt kexec telinit \
           nvidia-persistenced update-initramfs update-grub grub-install grub-mkconfig systemctl \
           apt apt-get aptitude apt-mark dpkg snap pip pip3; do
    cat > "$dir/$t" <<GUARD
#!/usr/bin/env bash
# rigkeeper read-only guard for '$t' (tests/hardware/guard.sh)
tool='$t'
log='$log'
refuse() { echo "REFUSED: \$tool \$* (\$reason)" | tee -a "\$log" >&2; exit 97; }
reason=''
case "\$tool" in
  nvidia-smi)
    for a in "\$@"; do
      case "\$a" in
        -pm|-pl|-ac|-rac|-lgc|-rgc|-lmc|-rmc|-r|-c|-mig|-e|-am|-caa|--gom|\\
        --persistence-mode*|--power-limit*|--applications-clocks*|--reset-applications-clocks|\\
        --lock-gpu-clocks*|--reset-gpu-clocks|--lock-memory-clocks*|--reset-memory-clocks|\\
        --gpu-reset|--compute-mode*|--multi-instance-gpu*|--ecc-config*|--accounting-mode*|\\
        --clear-accounted-apps|--gom=*|-pm=*|-pl=*|-c=*|-e=*|-am=*)
          reason="state-changing argument '\$a'" ;;
      esac
    done ;;
  setpci)
    for a in "\$@"; do case "\$a" in *=*) reason="register write '\$a'" ;; esac; done ;;
  modprobe)
    ok=''
    for a in "\$@"; do
      case "\$a" in -n|--dry-run|--show-depends|-D|-c|--showconfig|-V|--version|-R|--resolve-alias) ok=1 ;; esac
    done
    [ -n "\$ok" ] || reason='loads or unloads a kernel module' ;;
  rmmod|insmod|reboot|shutdown|poweroff|halt|kexec|telinit|nvidia-persistenced|update-initramfs|\\
  update-grub|grub-install|grub-mkconfig)
    reason='changes the machine' ;;
  systemctl)
    verb=''
    for a in "\$@"; do case "\$a" in -*) ;; *) verb=\$a; break ;; esac; done
    case "\$verb" in
      ''|status|show|cat|is-active|is-enabled|is-failed|is-system-running|list-*|get-default|show-environment) ;;
      *) case " \$* " in *" --version "*) ;; *) reason="systemctl \$verb changes the machine" ;; esac ;;
    esac ;;
  apt|aptitude)
    verb=''
    for a in "\$@"; do case "\$a" in -*) ;; *) verb=\$a; break ;; esac; done
    case "\$verb" in
      list|show|search|policy|depends|rdepends|madison|showsrc|changelog|why|why-not|'') ;;
      *) reason="package manager call that is not a query (\$verb)" ;;
    esac ;;
  apt-get)
    ok=''
    for a in "\$@"; do
      case "\$a" in -s|--simulate|--dry-run|--just-print|--no-act|--recon|check|changelog|-v|--version) ok=1 ;; esac
    done
    [ -n "\$ok" ] || reason='package manager call that is not a query' ;;
  apt-mark)
    case " \$* " in
      *" showhold "*|*" showheld "*|*" showmanual "*|*" showauto "*|*" showinstall "*|*" showremove "*|*" showpurge "*) ;;
      *) reason='apt-mark call that is not a query' ;;
    esac ;;
  dpkg)
    ok=''
    for a in "\$@"; do
      case "\$a" in
        -l|-L|-s|-S|-p|-C|--list|--listfiles|--status|--search|--print-avail|--audit|--get-selections|\\
        --compare-versions|--print-architecture|--print-foreign-architectures|--version|--help|\\
        -l*|--verify|-V) ok=1 ;;
      esac
    done
    [ -n "\$ok" ] || reason='package manager call that is not a query' ;;
  snap|pip|pip3)
    case "\${1:-}" in list|info|show|freeze|--version|-V|'') ;; *) reason='package manager call that is not a query' ;; esac ;;
esac
[ -z "\$reason" ] || refuse "\$@"
real=\$(PATH='$realpath_clean' command -v "\$tool" || true)
echo "passed: \$tool \$*" >> "\$log"
[ -n "\$real" ] || { echo "\$tool: command not found" >&2; exit 127; }
exec "\$real" "\$@"
GUARD
    chmod +x "$dir/$t"
  done
  export PATH="$dir:$PATH"
  # Prove the guard before trusting it: every refused call must fail before reaching the tool.
  local probe
  # The probes are harmless even if a wrapper let them through (no such GPU, device, module, unit or
  # package; --help).
  for probe in "nvidia-smi -i 99 -pl 1" "nvidia-smi -i 99 -pm 0" "setpci -s ff:1f.7 COMMAND=0" \
               "modprobe --help" "rmmod rk_guard_selftest_none" "reboot --help" "shutdown --help" \
               "nvidia-persistenced --help" "update-initramfs -h" \
               "systemctl restart rk-guard-selftest-none.service" \
               "apt-get install rk-guard-selftest-none" "apt install rk-guard-selftest-none" \
               "apt-mark hold rk-guard-selftest-none" "dpkg -i /nonexistent/rk-guard-selftest.deb" \
               "pip install --help"; do
    # shellcheck disable=SC2086
    if $probe >/dev/null 2>&1; [ $? -ne 97 ]; then
      echo "guard self-test failed: '$probe' was not refused" >&2
      return 1
    fi
  done
  local n
  n=$(grep -c '^REFUSED' "$log")
  : > "$log"
  echo "self-test: $n state-changing calls refused as expected" >> "$log"
}
