"""The one PowerShell script ``invoke lab.probe`` sends: host facts as JSON, nothing parsed from
console text. Its first line is the marker the WS-Man double answers to; the JSON shape is
:class:`npulab.lab.probe.HostFacts` (``schema: 1``).

Conda is looked for exactly where the build looks (``NPULAB_CONDA_ROOT``, else the host layout's
``conda_root``, holding ``condabin\\conda.bat``), so a probe that finds it means the build will."""

from __future__ import annotations

from npulab.hosts import layout
from npulab.quoting import quote_pwsh

_TEMPLATE = r"""# npulab-script: probe v1
$ErrorActionPreference = 'Stop'
[Console]::OutputEncoding = New-Object System.Text.UTF8Encoding $false

function Get-Optional([scriptblock]$Block) {
    try { & $Block } catch { $null }
}

$os = Get-CimInstance -ClassName Win32_OperatingSystem
$cpu = Get-CimInstance -ClassName Win32_Processor | Select-Object -First 1
$nt = Get-ItemProperty -Path 'HKLM:\SOFTWARE\Microsoft\Windows NT\CurrentVersion'
$cp = Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\Nls\CodePage'
$fs = Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem'
$disk = Get-CimInstance -ClassName Win32_LogicalDisk -Filter "DeviceID='$($env:SystemDrive)'"

# Every AMD PCI function (VEN_1022); the NPU kind is decided by npulab from the IDs.
$drivers = @{}
Get-CimInstance -ClassName Win32_PnPSignedDriver |
    Where-Object { $_.DeviceID -like 'PCI\VEN_1022*' } |
    ForEach-Object { $drivers[$_.DeviceID] = $_ }
$pci = @(Get-CimInstance -ClassName Win32_PnPEntity |
    Where-Object { $_.DeviceID -like 'PCI\VEN_1022*' } |
    ForEach-Object {
        $drv = $drivers[$_.DeviceID]
        [ordered]@{
            device_id       = $_.DeviceID
            name            = $_.Name
            driver_version  = if ($drv) { $drv.DriverVersion } else { $null }
            driver_provider = if ($drv) { $drv.DriverProviderName } else { $null }
        }
    })

$git = Get-Optional { (& git.exe --version 2>$null | Select-Object -First 1) }
$lfs = Get-Optional { (& git.exe lfs version 2>$null | Select-Object -First 1) }
# The build's own rule (win-prereqs): NPULAB_CONDA_ROOT, else the host layout's conda root.
$condaRoot = if ($env:NPULAB_CONDA_ROOT) { $env:NPULAB_CONDA_ROOT } else { @@CONDA_ROOT@@ }
$conda = $null
if (Test-Path -LiteralPath (Join-Path $condaRoot 'condabin\conda.bat')) {
    $conda = Join-Path $condaRoot 'condabin\conda.bat'
}
$vswhere = "${env:ProgramFiles(x86)}\Microsoft Visual Studio\Installer\vswhere.exe"
$vs = $null
if (Test-Path -LiteralPath $vswhere) {
    $vs = Get-Optional {
        & $vswhere -version '[16,17)' -products '*' `
            -requires Microsoft.VisualStudio.Component.VC.Tools.x86.x64 `
            -property installationPath | Select-Object -First 1
    }
}
$runner = Get-Optional {
    Get-Service -Name 'actions.runner.*' -ErrorAction Stop | Select-Object -First 1 |
        ForEach-Object { "$($_.Name) ($($_.Status))" }
}

$facts = [ordered]@{
    schema        = 1
    computer_name = $env:COMPUTERNAME
    cpu           = $cpu.Name.Trim()
    windows       = [ordered]@{
        caption         = $os.Caption
        build           = [string]$os.BuildNumber
        ubr             = [int]$nt.UBR
        display_version = [string]$nt.DisplayVersion
    }
    last_boot     = $os.LastBootUpTime.ToUniversalTime().ToString('o')
    oem_codepage  = [int]$cp.OEMCP
    disk          = [ordered]@{
        drive      = $env:SystemDrive
        free_bytes = [int64]$disk.FreeSpace
        size_bytes = [int64]$disk.Size
    }
    pci           = $pci
    prereqs       = [ordered]@{
        conda          = $conda
        git            = $git
        git_lfs        = $lfs
        vs2019_v142    = $vs
        runner_service = $runner
    }
    long_paths    = ($fs.LongPathsEnabled -eq 1)
}
ConvertTo-Json -InputObject $facts -Depth 6 -Compress
"""


def render(conda_root: str) -> str:
    return _TEMPLATE.replace("@@CONDA_ROOT@@", quote_pwsh(conda_root))


PROBE_SCRIPT = render(layout.load().conda_root)
