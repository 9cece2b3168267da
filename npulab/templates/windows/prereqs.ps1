$ErrorActionPreference = 'Stop'
$missing = @()
$condaRoot = if ($env:NPULAB_CONDA_ROOT) { $env:NPULAB_CONDA_ROOT } else { {{conda_root}} }
if (-not (Test-Path (Join-Path $condaRoot 'condabin\conda.bat'))) { $missing += "conda (Miniconda at $condaRoot; set NPULAB_CONDA_ROOT)" }
if (-not (Get-Command git -ErrorAction SilentlyContinue)) { $missing += 'git' }
else { $ErrorActionPreference = 'Continue'; & git lfs version *> $null; $lfsOk = $LASTEXITCODE -eq 0; $ErrorActionPreference = 'Stop'; if (-not $lfsOk) { $missing += 'git lfs' } }
$vswhere = Join-Path ${env:ProgramFiles(x86)} 'Microsoft Visual Studio\Installer\vswhere.exe'
$vs = $null
if (Test-Path $vswhere) { $vs = & $vswhere -products '*' -version {{vs_range}} -requires {{vc_component}} -property installationPath | Select-Object -First 1 }
if (-not $vs) { $missing += 'Visual Studio 2019 with the C++ v142 x64 tools' }
$lp = Get-ItemProperty -Path 'HKLM:\SYSTEM\CurrentControlSet\Control\FileSystem' -Name LongPathsEnabled -ErrorAction SilentlyContinue
if (-not $lp -or $lp.LongPathsEnabled -ne 1) { $missing += 'LongPathsEnabled=1' }
if ($missing.Count -gt 0) {
  Write-Output ('missing prerequisites: ' + ($missing -join ', '))
  Write-Output 'fix: install them (docs/windows-build.md, invoke lab.provision)'
  exit 1
}
Write-Output "prerequisites present (VS 2019 at $vs)"
exit 0
