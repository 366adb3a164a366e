"""What the simulator's apt repositories contain: package names, versions and dependency shapes.

Shapes follow the real control files:
  * Ubuntu archive (nvidia-graphics-drivers-<branch>[-server], debian/control of the 515-server source
    in canonical/nvidia-graphics-drivers): nvidia-utils-<F> Provides/Conflicts/Replaces nvidia-utils,
    nvidia-smi; nvidia-dkms-<F> Provides/Conflicts/Replaces nvidia-dkms-kernel; the driver metapackage
    pins its parts with "(= binary version)" and the kernel parts with "(<= X-1), (>= X)";
    transitional packages are "Depends: <new name>" with "Transitional package for <new name>".
  * CUDA repo: cuda-drivers-<branch> "X-1" Depends on the branch's packages with ">= X" only
    (dstackai/dstack#2355 quotes cuda-drivers-535 535.183.01-1), driver packages "X-0ubuntu1";
    from 580 the fabric manager is a package called nvidia-fabricmanager that only *Provides*
    nvidia-fabricmanager-580, so "nvidia-fabricmanager-580=<version>" cannot be installed from that
    repo (NVIDIA/gpu-driver-container#451).
  * libnvidia-container repo: the four toolkit packages, nvidia-container-toolkit pinning
    nvidia-container-toolkit-base to its own version.

Payloads are the simulator's (tests/sim/pkgsrc): see build_repo.py for how files are produced.
"""
from __future__ import annotations

from dataclasses import dataclass, field

UBUNTU_MAINT = "Ubuntu Core Developers <ubuntu-devel-discuss@lists.ubuntu.com>"
CUDA_MAINT = "cudatools <cudatools@nvidia.com>"
CTK_MAINT = "NVIDIA CORPORATION <cudatools@nvidia.com>"
NOTE = "\n .\n Built by the rigkeeper simulator: a stand-in with the real name, version and dependencies."

# --- Versions ---------------------------------------------------------------------------------

# Ubuntu noble archive: two versions per branch, older first.
UBUNTU_DRIVER_VERSIONS = {
    "535": ["535.247.01-0ubuntu0.24.04.1", "535.261.03-0ubuntu0.24.04.1"],
    "545": ["545.29.02-0ubuntu1", "545.29.06-0ubuntu0.24.04.1"],
    "550": ["550.144.03-0ubuntu0.24.04.1", "550.163.01-0ubuntu0.24.04.1"],
    "580": ["580.82.07-0ubuntu0.24.04.1", "580.95.05-0ubuntu0.24.04.1"],
}
# -server flavours (545 never had one in Ubuntu).
UBUNTU_SERVER_BRANCHES = ["535", "550", "580"]
# FACTS.md pitfall: in current archives the 535 -server packages are transitional and pull 580.
TRANSITIONAL = {"flavour": "535-server", "version": "535.309.01-0ubuntu0.24.04.2", "target": "580-server"}
# Open kernel module variants: -open for every desktop branch, -server-open for 580 only.
OPEN_FLAVOURS = ["535", "545", "550", "580", "580-server"]
FABRICMANAGER_BRANCHES = ["535", "550", "580"]

# CUDA repository (developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64).
CUDA_DRIVER_BRANCHES = ["535", "545", "550", "580"]
CUDA_OPEN_BRANCHES = ["550", "580"]


def upstream(version: str) -> str:
    return version.split("-")[0]


def cuda_driver_versions(branch: str) -> list[str]:
    return [upstream(v) + "-0ubuntu1" for v in UBUNTU_DRIVER_VERSIONS[branch]]


# CUDA toolkits: package suffix -> (toolkit deb version, nvcc, cudart, nvcc --version lines 2-3, build id)
# nvcc texts are verbatim from `nvcc --version` output quoted in public READMEs and issues.
CUDA_TOOLKITS = {
    "11-8": ("11.8.0-1", "11.8.89", "11.8.89", "2005-2022", "Wed_Sep_21_10:33:58_PDT_2022", "31833905_0"),
    "12-2": ("12.2.2-1", "12.2.140", "12.2.140", "2005-2023", "Tue_Aug_15_22:02:13_PDT_2023", "33191640_0"),
    "12-4": ("12.4.1-1", "12.4.131", "12.4.127", "2005-2024", "Thu_Mar_28_02:18:24_PDT_2024", "34097967_0"),
    "12-8": ("12.8.1-1", "12.8.93", "12.8.90", "2005-2025", "Fri_Feb_21_20:23:50_PST_2025", "35583870_0"),
    "13-0": ("13.0.2-1", "13.0.88", "13.0.96", "2005-2025", "Wed_Aug_20_01:58:59_PM_PDT_2025", "36424714_0"),
}
# Latest version of the per-major and global config-common packages (newest toolkit of that major).
CUDA_CONFIG_COMMON = {"11": "11.8.89-1", "12": "12.8.90-1", "13": "13.0.96-1", "": "13.0.96-1"}

CUDNN8_VERSIONS = ["8.9.7.29-1+cuda11.8", "8.9.7.29-1+cuda12.2"]
CUDNN9_VERSIONS = {"12": ["9.5.1.17-1", "9.13.0.50-1"], "13": ["9.13.0.50-1"]}

CTK_VERSIONS = ["1.17.8-1", "1.18.0-1"]

# --- Data model -------------------------------------------------------------------------------


@dataclass
class Deb:
    name: str
    version: str
    description: str
    arch: str = "amd64"
    section: str = "restricted/libs"
    maintainer: str = UBUNTU_MAINT
    source: str | None = None
    fields: dict[str, str] = field(default_factory=dict)   # Depends, Provides, Conflicts, ...
    files: dict[str, tuple[str, object]] = field(default_factory=dict)  # path -> (kind, arg)
    links: dict[str, str] = field(default_factory=dict)    # path -> target
    scripts: dict[str, str] = field(default_factory=dict)  # postinst, prerm, ...
    conffiles: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return (self.name, self.version)

    @property
    def filename(self) -> str:
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"


def _pvr(name: str) -> dict[str, str]:
    """Provides/Conflicts/Replaces one virtual name (the usual way to make flavours exclusive)."""
    return {"Provides": name, "Conflicts": name, "Replaces": name}


def doc(deb: Deb) -> Deb:
    deb.files[f"/usr/share/doc/{deb.name}/README.rigkeeper-sim"] = (
        "text", f"{deb.name} {deb.version}: rigkeeper simulator package (no NVIDIA software inside).\n")
    return deb


# --- Driver packages --------------------------------------------------------------------------


def _named(base: str, flavour: str) -> str:
    """nvidia-utils + 580 -> nvidia-utils-580; from 590 NVIDIA's packages drop the branch (flavour "")."""
    return f"{base}-{flavour}" if flavour else base


def firmware_name(flavour: str, upstream_version: str) -> str:
    """Ubuntu's version-named GSP firmware package: nvidia-firmware-580-580.95.05 (a dependency of
    nvidia-dkms-580 on packages.ubuntu.com; -server flavours carry -server, the open variant uses
    its flavour's). Without a branch in the flavour (590+ CUDA repo): nvidia-firmware-<version>
    (UNVERIFIED shape)."""
    return f"nvidia-firmware-{flavour}-{upstream_version}" if flavour else f"nvidia-firmware-{upstream_version}"


def firmware(flavour: str, version: str, maint: str = UBUNTU_MAINT) -> Deb:
    """The GSP firmware of exactly one driver version: /lib/firmware/nvidia/<version>/gsp_*.bin
    (debian/templates/nvidia-firmware-flavour-version.install.in of canonical/nvidia-graphics-drivers).
    The open kernel modules cannot start a GPU without it (the simulator's kernel checks)."""
    X = upstream(version)
    fw = f"/lib/firmware/nvidia/{X}"
    return doc(Deb(name=firmware_name(flavour, X), version=version, maintainer=maint,
                   source=f"nvidia-graphics-drivers-{flavour}" if flavour else "nvidia-graphics-drivers",
                   section="restricted/kernel", description="Firmware files used by the kernel module" + NOTE,
                   files={f"{fw}/gsp_ga10x.bin": ("placeholder", f"GSP firmware {X} (GA10x and newer)"),
                          f"{fw}/gsp_tu10x.bin": ("placeholder", f"GSP firmware {X} (TU10x)")}))


def dkms_package(name: str, flavour: str, source_pkg: str, version: str, kind: str, maint: str, src: str) -> Deb:
    """nvidia-dkms-<flavour>[-open]: builds the module for every installed kernel with headers at
    install, and again when a kernel or its headers arrive later (kernel hooks), through the
    simulator's DKMS (simkernel.py dkms-install / dkms-autoinstall); with Secure Boot the build is
    signed with the local MOK when one exists (/var/lib/shim-signed/mok/MOK.der), as Ubuntu's DKMS
    does. Depends on the firmware of exactly its version, as on packages.ubuntu.com."""
    X = upstream(version)
    common = _named("nvidia-kernel-common", flavour)
    kern = lambda n: f"{n} (<= {X}-1), {n} (>= {X})"  # noqa: E731
    hook = ("#!/bin/sh\n# rigkeeper simulator: DKMS builds the NVIDIA module for a new kernel (or its headers)\n"
            '[ -x /usr/lib/rigkeeper-sim/simkernel.py ] || exit 0\n'
            'exec /usr/bin/python3 /usr/lib/rigkeeper-sim/simkernel.py dkms-autoinstall "$1"\n')
    return doc(Deb(name=name, version=version, maintainer=maint, source=src, section="restricted/libs",
                   description="NVIDIA DKMS package" + (" (open kernel modules)" if kind == "open" else "") + NOTE,
                   fields={"Multi-Arch": "foreign",
                           "Depends": ", ".join([kern(source_pkg), kern(common), firmware_name(flavour, X)]),
                           **_pvr("nvidia-dkms-kernel")},
                   files={f"/etc/kernel/postinst.d/rigkeeper-sim-{name}": ("script", hook),
                          f"/etc/kernel/header_postinst.d/rigkeeper-sim-{name}": ("script", hook)},
                   scripts={"postinst": ("dkms-postinst", (X, kind)), "prerm": ("dkms-prerm", (X,))}))


def driver_flavour(flavour: str, version: str, maint: str = UBUNTU_MAINT) -> list[Deb]:
    """The packages of one nvidia-graphics-drivers-<flavour> source at one version (flavour "" for
    NVIDIA's unversioned 590+ names)."""
    F, V, X = flavour, version, upstream(version)
    branch = F.split("-")[0] if F else X.split(".")[0]
    n = lambda base: _named(base, F)  # noqa: E731
    exact = f"(= {V})"
    kern = lambda name: f"{name} (<= {X}-1), {name} (>= {X})"  # noqa: E731
    src = f"nvidia-graphics-drivers-{F}" if F else "nvidia-graphics-drivers"
    sect = "restricted/libs"

    def deb(name, desc, **kw) -> Deb:
        return doc(Deb(name=name, version=V, description=desc + NOTE, maintainer=maint, source=src,
                       section=kw.pop("section", sect), **kw))

    out = [
        # Provides the version-named virtual nvidia-kernel-common-580-<version> that
        # libnvidia-compute-580 depends on (packages.ubuntu.com, noble-updates).
        deb(n("nvidia-kernel-common"), "Shared files used with the kernel module",
            fields=({"Provides": f"nvidia-kernel-common, {n('nvidia-kernel-common')}-{X}",
                     "Conflicts": "nvidia-kernel-common", "Replaces": "nvidia-kernel-common"} if F else
                    {"Provides": f"nvidia-kernel-common-{X}"}),
            files={"/usr/lib/rigkeeper-sim/sim-modprobe": ("sim-modprobe", None)}),
        deb(n("nvidia-kernel-source"), "NVIDIA kernel source package",
            fields={"Multi-Arch": "foreign", **(_pvr("nvidia-kernel-source") if F else {})},
            files={f"/usr/src/nvidia-{X}/README": ("text", f"NVIDIA kernel module source {X} (simulated)\n")}),
        dkms_package(n("nvidia-dkms"), F, n("nvidia-kernel-source"), V, "proprietary", maint, src),
        firmware(F, V, maint),
        deb(n("nvidia-utils"), "NVIDIA driver support binaries", section="restricted/utils",
            fields={"Depends": "python3", "Suggests": n("nvidia-driver"),
                    "Provides": "nvidia-utils, nvidia-smi" if F else "nvidia-smi",
                    "Conflicts": "nvidia-utils, nvidia-smi" if F else "nvidia-smi",
                    "Replaces": "nvidia-utils, nvidia-smi" if F else "nvidia-smi"},
            files={"/usr/bin/nvidia-smi": ("wrapper", ("nvidia_smi", "smi_main", X)),
                   "/usr/lib/rigkeeper-sim/nvidia_smi.py": ("nvsim", None)}),
        deb(n("libnvidia-compute"), "NVIDIA libcompute package",
            fields={"Multi-Arch": "same", "Depends": f"{n('nvidia-kernel-common')}-{X}",
                    "Provides": (f"libnvidia-compute, " if F else "") + f"libnvidia-ml1 (= {V}), libcuda1 (= {V})",
                    **({"Conflicts": "libnvidia-compute", "Replaces": "libnvidia-compute"} if F else {})},
            # libcuda.py: the CUDA driver API that the programs the fake nvcc builds call (nvsim.py's
            # bench_main), shipped where a real program finds libcuda.so.1.
            files={f"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.{X}": ("placeholder", f"libnvidia-ml {X}"),
                   f"/usr/lib/x86_64-linux-gnu/libcuda.so.{X}": ("placeholder", f"libcuda {X}"),
                   "/usr/lib/rigkeeper-sim/libcuda.py": ("nvsim", None)},
            links={"/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1": f"libnvidia-ml.so.{X}",
                   "/usr/lib/x86_64-linux-gnu/libcuda.so.1": f"libcuda.so.{X}"}),
        deb(n("nvidia-compute-utils"), "NVIDIA compute utilities", section="restricted/utils",
            fields={"Depends": f"{n('libnvidia-compute')}, python3",
                    "Provides": "nvidia-compute-utils, nvidia-persistenced" if F else "nvidia-persistenced",
                    "Conflicts": "nvidia-compute-utils, nvidia-persistenced" if F else "nvidia-persistenced",
                    "Replaces": "nvidia-compute-utils, nvidia-persistenced" if F else "nvidia-persistenced"},
            files={"/usr/bin/nvidia-persistenced": ("wrapper", ("nvidia_persistenced", "persistenced_main", X)),
                   "/usr/lib/rigkeeper-sim/nvidia_persistenced.py": ("nvsim", None),
                   "/lib/systemd/system/nvidia-persistenced.service": ("persistenced-unit", branch)},
            scripts={"postinst": "persistenced-postinst"}),
        deb(n("libnvidia-common"), "Shared files used by the NVIDIA libraries", arch="all",
            fields={"Multi-Arch": "foreign", **(_pvr("libnvidia-common") if F else {})}),
        deb(n("libnvidia-gl"), "NVIDIA OpenGL/GLX/EGL/GLES GLVND libraries and Vulkan ICD",
            fields={"Multi-Arch": "same", "Depends": n("libnvidia-common"),
                    "Provides": "libnvidia-gl, libglx-vendor, libegl-vendor" if F else "libglx-vendor, libegl-vendor",
                    **({"Conflicts": "libnvidia-gl", "Replaces": "libnvidia-gl"} if F else {})}),
        deb(n("libnvidia-extra"), "Extra libraries for the NVIDIA driver",
            fields={"Multi-Arch": "same", **(_pvr("libnvidia-extra") if F else {})}),
        deb(n("libnvidia-decode"), "NVIDIA Video Decoding runtime libraries",
            fields={"Multi-Arch": "same", "Depends": f"{n('libnvidia-compute')} {exact}",
                    **(_pvr("libnvidia-decode") if F else {})}),
        deb(n("libnvidia-encode"), "NVENC Video Encoding runtime library",
            fields={"Multi-Arch": "same", **(_pvr("libnvidia-encode") if F else {})}),
        deb(n("libnvidia-cfg1"), "NVIDIA binary OpenGL/GLX configuration library",
            fields={"Multi-Arch": "same", **_pvr("libnvidia-cfg1-any")}),
        deb(n("libnvidia-fbc1"), "NVIDIA OpenGL-based Framebuffer Capture runtime library",
            fields={"Multi-Arch": "same", **(_pvr("libnvidia-fbc1") if F else {})}),
        deb(n("xserver-xorg-video-nvidia"), "NVIDIA binary Xorg driver", section="restricted/x11",
            fields={"Depends": f"{n('libnvidia-cfg1')} {exact}",
                    "Provides": "xorg-driver-binary, nvidia-driver-binary",
                    "Conflicts": "xorg-driver-binary, nvidia-driver-binary",
                    "Replaces": "xorg-driver-binary, nvidia-driver-binary"}),
        deb(n("nvidia-headless-no-dkms"), "NVIDIA headless metapackage - no DKMS",
            fields={"Depends": ", ".join([kern(n("nvidia-kernel-common")), f"{n('nvidia-kernel-source')} {exact}",
                                          f"{n('libnvidia-compute')} {exact}", f"{n('nvidia-compute-utils')} {exact}",
                                          f"{n('libnvidia-cfg1')} {exact}"])}),
        deb(n("nvidia-headless"), "NVIDIA headless metapackage",
            fields={"Depends": f"{n('nvidia-headless-no-dkms')} {exact}, {n('nvidia-dkms')} {exact}",
                    **_pvr("nvidia-headless")}),
        deb(n("nvidia-driver"), "NVIDIA driver metapackage",
            fields={"Depends": ", ".join([
                f"{n('libnvidia-gl')} {exact}", kern(n("nvidia-dkms")), kern(n("nvidia-kernel-common")),
                f"{n('nvidia-kernel-source')} {exact}", f"{n('libnvidia-compute')} {exact}",
                f"{n('libnvidia-extra')} {exact}", f"{n('nvidia-compute-utils')} {exact}",
                f"{n('libnvidia-decode')} {exact}", f"{n('libnvidia-encode')} {exact}", f"{n('nvidia-utils')} {exact}",
                f"{n('xserver-xorg-video-nvidia')} {exact}", f"{n('libnvidia-cfg1')} {exact}",
                f"{n('libnvidia-fbc1')} {exact}"]),
                "Suggests": "nvidia-settings, nvidia-prime (>= 0.8)"}),
    ]
    return out


def driver_open(flavour: str, version: str, maint: str = UBUNTU_MAINT) -> list[Deb]:
    """The -open kernel module variant: own source, DKMS and metapackages; same userspace."""
    F, V, X = flavour, version, upstream(version)
    O = f"{F}-open" if F else "open"
    n = lambda base: _named(base, F)  # noqa: E731
    exact = f"(= {V})"
    kern = lambda name: f"{name} (<= {X}-1), {name} (>= {X})"  # noqa: E731
    src = f"nvidia-graphics-drivers-{F}" if F else "nvidia-graphics-drivers"

    def deb(name, desc, **kw) -> Deb:
        return doc(Deb(name=name, version=V, description=desc + NOTE, maintainer=maint, source=src, **kw))

    return [
        deb(f"nvidia-kernel-source-{O}", "NVIDIA kernel source package (open kernel modules)",
            fields={"Multi-Arch": "foreign", **_pvr("nvidia-kernel-source")},
            files={f"/usr/src/nvidia-{X}/README": ("text", f"NVIDIA open kernel module source {X} (simulated)\n")}),
        dkms_package(f"nvidia-dkms-{O}", F, f"nvidia-kernel-source-{O}", V, "open", maint, src),
        deb(f"nvidia-headless-no-dkms-{O}", "NVIDIA headless metapackage - no DKMS (open kernel modules)",
            fields={"Depends": ", ".join([kern(n("nvidia-kernel-common")), f"nvidia-kernel-source-{O} {exact}",
                                          f"{n('libnvidia-compute')} {exact}", f"{n('nvidia-compute-utils')} {exact}",
                                          f"{n('libnvidia-cfg1')} {exact}"])}),
        deb(f"nvidia-headless-{O}", "NVIDIA headless metapackage (open kernel modules)",
            fields={"Depends": f"nvidia-headless-no-dkms-{O} {exact}, nvidia-dkms-{O} {exact}",
                    **_pvr("nvidia-headless")}),
        deb(f"nvidia-driver-{O}", "NVIDIA driver (open kernel modules) metapackage",
            fields={"Depends": ", ".join([
                f"{n('libnvidia-gl')} {exact}", kern(f"nvidia-dkms-{O}"), kern(n("nvidia-kernel-common")),
                f"nvidia-kernel-source-{O} {exact}", f"{n('libnvidia-compute')} {exact}",
                f"{n('libnvidia-extra')} {exact}", f"{n('nvidia-compute-utils')} {exact}",
                f"{n('libnvidia-decode')} {exact}", f"{n('libnvidia-encode')} {exact}", f"{n('nvidia-utils')} {exact}",
                f"{n('xserver-xorg-video-nvidia')} {exact}", f"{n('libnvidia-cfg1')} {exact}",
                f"{n('libnvidia-fbc1')} {exact}"])}),
    ]


def transitional(flavour: str, version: str, target: str) -> list[Deb]:
    """Every package name of <flavour> as an empty package depending on its <target> counterpart."""
    # The firmware is named for a version, not a flavour: no transitional package carries it.
    names = [d.name for d in driver_flavour(flavour, version) if not d.name.startswith("nvidia-firmware-")]
    out = []
    for n in names:
        new = n.replace(flavour, target)
        out.append(doc(Deb(name=n, version=version, source=f"nvidia-graphics-drivers-{target}",
                           arch="all" if n.startswith("libnvidia-common") else "amd64",
                           description=f"Transitional package for {new}\n This is a transitional package for "
                                       f"{new}, and can be\n safely removed after the installation is complete." + NOTE,
                           fields={"Depends": new, "Multi-Arch": "foreign"})))
    return out


def fabricmanager(branch: str, version: str, name: str | None = None, maint: str = UBUNTU_MAINT) -> Deb:
    """nvidia-fabricmanager-<branch>; name="nvidia-fabricmanager" gives the CUDA repo's 580+ shape."""
    X = upstream(version)
    if name is None:
        fields = _pvr("nvidia-fabricmanager")
    else:
        others = ", ".join(f"nvidia-fabricmanager-{b}" for b in FABRICMANAGER_BRANCHES if b != branch)
        fields = {"Provides": f"nvidia-fabricmanager-{branch}", "Conflicts": others, "Replaces": others}
    fields["Depends"] = "python3"
    deb = Deb(name=name or f"nvidia-fabricmanager-{branch}", version=version, maintainer=maint,
              section="restricted/utils", source=f"fabric-manager-{branch}",
              description="Fabric Manager for NVSwitch based systems." + NOTE, fields=fields,
              files={"/usr/bin/nv-fabricmanager": ("wrapper", ("nv_fabricmanager", "fabricmanager_main", X)),
                     "/usr/lib/rigkeeper-sim/nv_fabricmanager.py": ("nvsim", None),
                     "/usr/share/nvidia/nvswitch/fabricmanager.cfg": ("fm-cfg", None),
                     "/lib/systemd/system/nvidia-fabricmanager.service": ("fm-unit", None)},
              conffiles=["/usr/share/nvidia/nvswitch/fabricmanager.cfg"],
              scripts={"postinst": "daemon-reload-postinst"})
    return doc(deb)


# --- CUDA toolkit, cuDNN, keyring ---------------------------------------------------------------


def cuda_toolkit(suffix: str) -> list[Deb]:
    tk, nvcc, cudart, years, built, build = CUDA_TOOLKITS[suffix]
    major, minor = suffix.split("-")
    dotted = f"{major}.{minor}"
    home = f"/usr/local/cuda-{dotted}"
    lib = f"{home}/targets/x86_64-linux/lib"
    cm = dict(maintainer=CUDA_MAINT, section="multiverse/devel")
    so = f"libcudart.so.{cudart}"
    nvcc_text = ("nvcc: NVIDIA (R) Cuda compiler driver\n"
                 f"Copyright (c) {years} NVIDIA Corporation\n"
                 f"Built on {built}\n"
                 f"Cuda compilation tools, release {dotted}, V{nvcc}\n"
                 f"Build cuda_{dotted}.r{dotted}/compiler.{build}\n")
    version_json = ("{\n"
                    f'   "cuda" : {{\n      "name" : "CUDA SDK",\n      "version" : "{upstream(tk)}"\n   }},\n'
                    f'   "cuda_cudart" : {{\n      "name" : "CUDA Runtime (cudart)",\n      "version" : "{cudart}"\n   }},\n'
                    f'   "cuda_nvcc" : {{\n      "name" : "CUDA NVCC",\n      "version" : "{nvcc}"\n   }}\n'
                    "}\n")
    prio = f"{major}{minor}"
    return [
        doc(Deb(name=f"cuda-nvcc-{suffix}", version=f"{nvcc}-1", description=f"CUDA nvcc {dotted}" + NOTE, **cm,
                fields={"Depends": "python3"},
                files={f"{home}/bin/nvcc": ("nvcc", (nvcc_text, dotted))})),
        doc(Deb(name=f"cuda-cudart-{suffix}", version=f"{cudart}-1", description=f"CUDA Runtime native Libraries {dotted}" + NOTE,
                **cm, files={f"{lib}/{so}": ("placeholder", f"libcudart {cudart}")},
                links={f"{lib}/libcudart.so.{major}": so, f"{home}/lib64": "targets/x86_64-linux/lib"})),
        doc(Deb(name=f"cuda-toolkit-{suffix}-config-common", version=f"{cudart}-1", arch="all",
                description=f"Common config package for CUDA Toolkit {dotted}." + NOTE, **cm,
                files={home: ("dir", None)},
                scripts={"postinst": ("cuda-alt-postinst", (home, major, prio)),
                         "prerm": ("cuda-alt-prerm", (home, major))})),
        doc(Deb(name=f"cuda-toolkit-{suffix}", version=tk, description=f"CUDA Toolkit {dotted} meta-package" + NOTE, **cm,
                fields={"Depends": f"cuda-nvcc-{suffix} (>= {nvcc}), cuda-cudart-{suffix} (>= {cudart}), "
                                   f"cuda-toolkit-{suffix}-config-common, cuda-toolkit-{major}-config-common, "
                                   "cuda-toolkit-config-common"},
                files={f"{home}/version.json": ("text", version_json)})),
    ]


def cuda_config_common() -> list[Deb]:
    out = []
    for major, ver in CUDA_CONFIG_COMMON.items():
        name = f"cuda-toolkit-{major}-config-common" if major else "cuda-toolkit-config-common"
        conf = f"/etc/ld.so.conf.d/988_cuda-{major}.conf" if major else "/etc/ld.so.conf.d/000_cuda.conf"
        target = f"/usr/local/cuda-{major}/targets/x86_64-linux/lib" if major else "/usr/local/cuda/targets/x86_64-linux/lib"
        out.append(doc(Deb(name=name, version=ver, arch="all", maintainer=CUDA_MAINT, section="multiverse/devel",
                           description="Common config package for CUDA Toolkit." + NOTE,
                           files={conf: ("text", target + "\n")}, conffiles=[conf],
                           scripts={"postinst": "ldconfig-postinst"})))
    return out


def cudnn() -> list[Deb]:
    lib = "/usr/lib/x86_64-linux-gnu"
    inc = "/usr/include/x86_64-linux-gnu"
    cm = dict(maintainer=CUDA_MAINT, section="multiverse/libs")
    out = []

    def header(major, minor, patch, mult):
        return (f"/* cudnn_version.h (rigkeeper simulator) */\n#ifndef CUDNN_VERSION_H_\n#define CUDNN_VERSION_H_\n\n"
                f"#define CUDNN_MAJOR {major}\n#define CUDNN_MINOR {minor}\n#define CUDNN_PATCHLEVEL {patch}\n\n"
                f"#define CUDNN_VERSION (CUDNN_MAJOR * {mult} + CUDNN_MINOR * 100 + CUDNN_PATCHLEVEL)\n\n#endif\n")

    for v in CUDNN8_VERSIONS:
        up = v.split("-")[0]           # 8.9.7.29
        so3 = ".".join(up.split(".")[:3])  # 8.9.7
        out.append(doc(Deb(name="libcudnn8", version=v, description="cuDNN runtime libraries" + NOTE, **cm,
                           files={f"{lib}/libcudnn.so.{so3}": ("placeholder", f"libcudnn {up}")},
                           links={f"{lib}/libcudnn.so.8": f"libcudnn.so.{so3}"})))
        out.append(doc(Deb(name="libcudnn8-dev", version=v, description="cuDNN development libraries and headers" + NOTE, **cm,
                           fields={"Depends": f"libcudnn8 (= {v})"},
                           files={f"{inc}/cudnn_v8.h": ("text", '#include "cudnn_version.h"\n'),
                                  f"{inc}/cudnn_version_v8.h": ("text", header(*so3.split("."), 1000))},
                           scripts={"postinst": ("cudnn-alt-postinst", ("8", "80")),
                                    "prerm": ("cudnn-alt-prerm", ("8",))})))
    for cuda_major, versions in CUDNN9_VERSIONS.items():
        other = "13" if cuda_major == "12" else "12"
        for v in versions:
            up = v.split("-")[0]
            so3 = ".".join(up.split(".")[:3])
            rt = f"libcudnn9-cuda-{cuda_major}"
            dev = f"libcudnn9-dev-cuda-{cuda_major}"
            out.append(doc(Deb(name=rt, version=v, description=f"cuDNN runtime libraries for CUDA {cuda_major}" + NOTE, **cm,
                               fields={"Conflicts": f"libcudnn9-cuda-{other}"},
                               files={f"{lib}/libcudnn.so.{so3}": ("placeholder", f"libcudnn {up} cuda{cuda_major}")},
                               links={f"{lib}/libcudnn.so.9": f"libcudnn.so.{so3}"})))
            out.append(doc(Deb(name=dev, version=v, description=f"cuDNN development headers for CUDA {cuda_major}" + NOTE, **cm,
                               fields={"Depends": f"{rt} (= {v})", "Conflicts": f"libcudnn9-dev-cuda-{other}"},
                               files={f"{inc}/cudnn_v9.h": ("text", '#include "cudnn_version.h"\n'),
                                      f"{inc}/cudnn_version_v9.h": ("text", header(*so3.split("."), 10000))},
                               scripts={"postinst": ("cudnn-alt-postinst", ("9", "90")),
                                        "prerm": ("cudnn-alt-prerm", ("9",))})))
            out.append(doc(Deb(name=f"cudnn9-cuda-{cuda_major}", version=v, arch="all",
                               description=f"NVIDIA cuDNN for CUDA {cuda_major} (meta-package)" + NOTE, **cm,
                               fields={"Depends": f"{rt} (= {v}), {dev} (= {v})"})))
    return out


def cuda_keyring() -> Deb:
    lst = "/etc/apt/sources.list.d/cuda-ubuntu2404-x86_64.list"
    return doc(Deb(name="cuda-keyring", version="1.1-1", arch="all", maintainer=CUDA_MAINT, section="multiverse/misc",
                   description="GPG keyring for the CUDA repository" + NOTE,
                   files={"/usr/share/keyrings/cuda-archive-keyring.gpg": ("keyring", None),
                          lst: ("cuda-list", None)},
                   conffiles=[lst]))


def cuda_drivers(branch: str, version: str) -> Deb:
    X = upstream(version)
    parts = ["libnvidia-common", "libnvidia-compute", "libnvidia-decode", "libnvidia-encode",
             "libnvidia-extra", "libnvidia-fbc1", "libnvidia-gl", "nvidia-compute-utils", "nvidia-dkms",
             "nvidia-driver", "nvidia-kernel-common", "nvidia-kernel-source", "nvidia-utils",
             "xserver-xorg-video-nvidia"]
    return doc(Deb(name=f"cuda-drivers-{branch}", version=f"{X}-1", maintainer=CUDA_MAINT, section="multiverse/metapackages",
                   description=f"CUDA Driver meta-package, branch-specific ({branch})" + NOTE,
                   fields={"Depends": ", ".join(f"{p}-{branch} (>= {X})" for p in parts)}))


def nvidia_open(branch: str, version: str) -> Deb:
    X = upstream(version)
    return doc(Deb(name=f"nvidia-open-{branch}", version=f"{X}-1", maintainer=CUDA_MAINT, section="multiverse/metapackages",
                   description=f"NVIDIA driver with open kernel modules, branch {branch} (meta-package)" + NOTE,
                   fields={"Depends": f"nvidia-driver-{branch}-open (>= {X}), nvidia-dkms-{branch}-open (>= {X})"}))


# --- Container toolkit ------------------------------------------------------------------------

# Toolkit 1.18 added nvidia-cdi-refresh.{path,service}, enabled by the base package's postinst
# (NVIDIA/nvidia-container-toolkit packaging/debian/nvidia-container-toolkit-base.{install,postinst}).
CDI_REFRESH_FILES = {f"/etc/systemd/system/nvidia-cdi-refresh.{u}": ("pkgsrc", f"nvidia-cdi-refresh.{u}")
                     for u in ("path", "service")}


def container_toolkit(version: str) -> list[Deb]:
    X = upstream(version)
    cm = dict(maintainer=CTK_MAINT, section="utils")
    return [
        doc(Deb(name="libnvidia-container1", version=version, description="NVIDIA container runtime library" + NOTE,
                fields={"Multi-Arch": "same"}, **cm,
                files={f"/usr/lib/x86_64-linux-gnu/libnvidia-container.so.{X}": ("placeholder", f"libnvidia-container {X}")},
                links={"/usr/lib/x86_64-linux-gnu/libnvidia-container.so.1": f"libnvidia-container.so.{X}"})),
        doc(Deb(name="libnvidia-container-tools", version=version,
                description="NVIDIA container runtime library (command-line tools)" + NOTE, **cm,
                fields={"Depends": f"libnvidia-container1 (>= {version})"},
                files={"/usr/bin/nvidia-container-cli": ("container-cli", X)})),
        doc(Deb(name="nvidia-container-toolkit-base", version=version, description="NVIDIA Container Toolkit Base" + NOTE, **cm,
                fields={"Depends": "python3", "Breaks": "nvidia-container-runtime (<= 3.5.0-1), nvidia-container-runtime-hook",
                        "Replaces": "nvidia-container-runtime (<= 3.5.0-1), nvidia-container-runtime-hook"},
                files={"/usr/bin/nvidia-ctk": ("ctk", X),
                       "/usr/bin/nvidia-container-runtime": ("container-runtime", None),
                       "/etc/nvidia-container-runtime/config.toml": ("ctk-config", None),
                       **(CDI_REFRESH_FILES if X >= "1.18" else {})},
                scripts={"postinst": "cdi-refresh-postinst"} if X >= "1.18" else {},
                conffiles=["/etc/nvidia-container-runtime/config.toml"])),
        doc(Deb(name="nvidia-container-toolkit", version=version, description="NVIDIA Container toolkit" + NOTE, **cm,
                fields={"Depends": f"nvidia-container-toolkit-base (= {version}), "
                                   f"libnvidia-container-tools (>= {version}), libnvidia-container-tools (<< 2.0.0)"},
                files={"/usr/bin/nvidia-container-runtime-hook": ("runtime-hook", None)})),
    ]


# --- Kernels and Canonical's precompiled NVIDIA modules -------------------------------------------

KERNEL_MAINT = "Canonical Kernel Team <kernel-team@lists.ubuntu.com>"
# suite -> (release, package version, metapackage version). The release pocket's kernel is the one the
# base image boots (tests/sim/image/build.sh installs the same two packages); noble-updates brings a
# later kernel a test can enable, as a kernel update arrives on a real rig.
KERNELS = {
    "noble": ("6.8.0-51-generic", "6.8.0-51.52", "6.8.0.51.52"),
    "noble-updates": ("6.8.0-60-generic", "6.8.0-60.63", "6.8.0.60.63"),
}
# linux-restricted-modules: Canonical builds, and signs, the NVIDIA modules for each kernel ABI
# (packages.ubuntu.com: linux-modules-nvidia-580-open-generic Depends
# linux-modules-nvidia-580-open-<abi>-generic (= kernel version) and nvidia-kernel-common-580
# (>= driver version)). One build per driver version of the archive, told apart by a +N suffix as
# Ubuntu's respins are (6.8.0-146.146+2).
PRECOMPILED_FLAVOURS = ["580", "580-open", "580-server", "580-server-open"]

def kernel_packages(suite: str) -> list[Deb]:
    rel, kver, kmeta = KERNELS[suite]
    km = dict(maintainer=KERNEL_MAINT, section="kernel")
    image = Deb(name=f"linux-image-{rel}", version=kver, source="linux-signed",
                description="Signed kernel image generic" + NOTE, **km,
                fields={"Provides": "linux-image, fuse-module, kvm-api-4"},
                files={f"/boot/vmlinuz-{rel}": ("text", f"rigkeeper simulator kernel image {rel}\n"),
                       f"/boot/config-{rel}": ("text", "CONFIG_MODULES=y\nCONFIG_MODULE_SIG=y\nCONFIG_SECURITY_LOCKDOWN_LSM=y\n"),
                       f"/lib/modules/{rel}/modules.order": ("text", "")},
                scripts={"postinst": ("kernel-script", ("configure", "kernel-postinst", rel)),
                         "postrm": ("kernel-script", ("remove|purge", "kernel-postrm", rel))})
    headers = Deb(name=f"linux-headers-{rel}", version=kver, source="linux",
                  description=f"Linux kernel headers for version {rel.rsplit('-', 1)[0]}" + NOTE, **km,
                  files={f"/usr/src/linux-headers-{rel}/Makefile": ("text", "# rigkeeper simulator placeholder\n"),
                         f"/lib/modules/{rel}/build/Makefile": ("text", "# rigkeeper simulator placeholder\n")},
                  scripts={"postinst": ("kernel-script", ("configure", "headers-postinst", rel))})
    image_meta = Deb(name="linux-image-generic", version=kmeta, source="linux-meta", **km,
                     description="Generic Linux kernel image" + NOTE, fields={"Depends": f"linux-image-{rel}"})
    headers_meta = Deb(name="linux-headers-generic", version=kmeta, source="linux-meta", **km,
                       description="Generic Linux kernel headers" + NOTE, fields={"Depends": f"linux-headers-{rel}"})
    generic = Deb(name="linux-generic", version=kmeta, source="linux-meta", **km,
                  description="Complete Generic Linux kernel and headers" + NOTE,
                  fields={"Depends": f"linux-image-generic (= {kmeta}), linux-headers-generic (= {kmeta})"})
    return [doc(d) for d in (image, headers, image_meta, headers_meta, generic)]


def precompiled_modules(suite: str) -> list[Deb]:
    rel, kver, _kmeta = KERNELS[suite]
    out = []
    for F in PRECOMPILED_FLAVOURS:
        base = F.replace("-open", "")
        kind = "open" if F.endswith("-open") else "proprietary"
        branch = F.split("-")[0]
        for n, v in enumerate(UBUNTU_DRIVER_VERSIONS[branch], start=1):
            X = upstream(v)
            version = f"{kver}+{n}"
            ko = f"name={{name}}\nversion={X}\ntype={kind}\nsigner=canonical\nkernel={rel}\n"
            per_abi = Deb(name=f"linux-modules-nvidia-{F}-{rel}", version=version, source="linux-restricted-modules",
                          maintainer=KERNEL_MAINT, section="restricted/kernel",
                          description=f"Linux kernel nvidia modules for version {rel.rsplit('-', 1)[0]}" + NOTE,
                          fields={"Depends": f"linux-image-{rel}, nvidia-kernel-common-{base} (>= {X})"},
                          files={f"/lib/modules/{rel}/kernel/nvidia-{F}/{m}.ko": ("text", ko.format(name=m))
                                 for m in ("nvidia", "nvidia-uvm", "nvidia-modeset", "nvidia-drm")},
                          scripts={"postinst": "depmod-script", "postrm": "depmod-script"})
            meta = Deb(name=f"linux-modules-nvidia-{F}-generic", version=version, source="linux-restricted-modules",
                       maintainer=KERNEL_MAINT, section="restricted/kernel",
                       description=f"Extra drivers for nvidia-{F} for the generic flavour" + NOTE,
                       fields={"Depends": f"linux-modules-nvidia-{F}-{rel} (= {version}), "
                                          f"nvidia-kernel-common-{base} (>= {X})"})
            out += [doc(per_abi), doc(meta)]
    return out


# --- NVIDIA's CUDA repository from 590 on -----------------------------------------------------------

# Branch -> driver versions with the unversioned names of NVIDIA's Driver Installation Guide
# ("Ubuntu 590 and later packages": libnvidia-compute-580 -> libnvidia-compute, nvidia-dkms-580-open ->
# nvidia-dkms-open, cuda-drivers-580 removed, ...). 590.48.01, 595.71.05 and 610.57.04 are versions of
# real captures in ../shared/fixtures; 590.44.01 is CUDA 13.1's minimum driver (FACTS.md). No public
# 620 version string was found: 620.36.04 is invented in the real shape (tests/sim/README.md).
CUDA_UNVERSIONED = {"590": ["590.44.01", "590.48.01"], "595": ["595.71.05"], "610": ["610.57.04"],
                    "620": ["620.36.04"]}


def pinning_packages(branch: str, versions: list[str]) -> list[Deb]:
    """nvidia-driver-pinning-<branch> and -<version>: apt preferences that keep the unversioned
    family on a branch or a version ("install the pinning package prior to installing the driver",
    NVIDIA's guide). The preference file's exact content is UNVERIFIED; its effect is the documented one."""
    globs = "nvidia-* libnvidia-* cuda-drivers* xserver-xorg-video-nvidia*"
    out = []
    for name, pin, ver in [(f"nvidia-driver-pinning-{branch}", f"{branch}.*", f"{branch}-1")] + \
            [(f"nvidia-driver-pinning-{v}", f"{v}-*", f"{v}-1") for v in versions]:
        body = (f"# {name}: NVIDIA driver version locking (rigkeeper simulator)\n"
                f"Package: {globs}\nPin: version {pin}\nPin-Priority: 1000\n")
        out.append(doc(Deb(name=name, version=ver, arch="all", maintainer=CUDA_MAINT, section="multiverse/metapackages",
                           description=f"NVIDIA driver version locking for {pin}" + NOTE,
                           files={f"/etc/apt/preferences.d/{name}": ("text", body)})))
    return out


def unversioned_driver(branch: str, version: str) -> list[Deb]:
    V = f"{version}-0ubuntu1"
    debs = driver_flavour("", V, maint=CUDA_MAINT) + driver_open("", V, maint=CUDA_MAINT)
    metas = [doc(Deb(name="nvidia-open", version=f"{version}-1", maintainer=CUDA_MAINT, section="multiverse/metapackages",
                     description="NVIDIA driver with open kernel modules (meta-package)" + NOTE,
                     fields={"Depends": f"nvidia-driver-open (>= {version}), nvidia-dkms-open (>= {version})"}))]
    if int(branch) < 595:  # from 595 the open modules are effectively the only flavour (FACTS.md)
        metas.append(doc(Deb(name="cuda-drivers", version=f"{version}-1", maintainer=CUDA_MAINT,
                             section="multiverse/metapackages", description="CUDA Driver meta-package" + NOTE,
                             fields={"Depends": f"nvidia-driver (>= {version}), nvidia-dkms (>= {version})"})))
    return debs + metas


# --- The repositories -----------------------------------------------------------------------------


def ubuntu_archive() -> dict[str, list[Deb]]:
    """The archive's suites: noble (release pocket: drivers, the base image's kernel, its headers and
    precompiled modules) and noble-updates (a later kernel with its headers and modules)."""
    debs: list[Deb] = kernel_packages("noble") + precompiled_modules("noble")
    for branch, versions in UBUNTU_DRIVER_VERSIONS.items():
        flavours = [branch] + ([f"{branch}-server"] if branch in UBUNTU_SERVER_BRANCHES else [])
        for F in flavours:
            for v in versions:
                debs += driver_flavour(F, v)
                if F in OPEN_FLAVOURS:
                    debs += driver_open(F, v)
        if branch in FABRICMANAGER_BRANCHES:
            for v in versions:
                debs.append(fabricmanager(branch, v))
    t = TRANSITIONAL
    debs += transitional(t["flavour"], t["version"], t["target"])
    return {"noble": debs, "noble-updates": kernel_packages("noble-updates") + precompiled_modules("noble-updates")}


def cuda_repo() -> list[Deb]:
    debs: list[Deb] = [cuda_keyring()]
    for branch in CUDA_DRIVER_BRANCHES:
        for v in cuda_driver_versions(branch):
            debs += driver_flavour(branch, v, maint=CUDA_MAINT)
            debs += driver_open(branch, v, maint=CUDA_MAINT)
            debs.append(cuda_drivers(branch, v))
            if branch in CUDA_OPEN_BRANCHES:
                debs.append(nvidia_open(branch, v))
            if branch in FABRICMANAGER_BRANCHES:
                fm_version = f"{upstream(v)}-1"
                if int(branch) >= 580:
                    debs.append(fabricmanager(branch, fm_version, name="nvidia-fabricmanager", maint=CUDA_MAINT))
                else:
                    debs.append(fabricmanager(branch, fm_version, maint=CUDA_MAINT))
    for branch, versions in CUDA_UNVERSIONED.items():
        for v in versions:
            debs += unversioned_driver(branch, v)
        debs += pinning_packages(branch, versions)
    for suffix in CUDA_TOOLKITS:
        debs += cuda_toolkit(suffix)
    debs += cuda_config_common()
    debs += cudnn()
    return debs


def container_repo() -> list[Deb]:
    debs: list[Deb] = []
    for v in CTK_VERSIONS:
        debs += container_toolkit(v)
    return debs


def repositories() -> dict:
    """{repository: debs}; the Ubuntu archive's value is {suite: debs}."""
    return {"ubuntu": ubuntu_archive(), "cuda": cuda_repo(), "libnvidia-container": container_repo()}
