# npulab-script: win-lfs v1
$ErrorActionPreference = 'Stop'
$build = Split-Path -Parent $PSScriptRoot
$tree = Join-Path $build 'tree'
$repo = Join-Path $build '.npulab-win\lfs-repo'
$remote = {{repo_url}}
$objects = @({{lfs_objects}})
function Test-LfsObject([string] $file, [string] $oid, [long] $size) {
  if (-not (Test-Path -LiteralPath $file -PathType Leaf)) { return $false }
  if ((Get-Item -LiteralPath $file).Length -ne $size) { return $false }
  return (Get-FileHash -LiteralPath $file -Algorithm SHA256).Hash.ToLowerInvariant() -eq $oid
}
$todo = @($objects | Where-Object { -not (Test-LfsObject (Join-Path $tree $_.Path) $_.Oid $_.Size) })
if ($todo.Count -eq 0) {
  Write-Output "lfs: all $($objects.Count) object(s) present and verified"
  exit 0
}
$git = Get-Command git -CommandType Application -ErrorAction SilentlyContinue | Select-Object -First 1
if (-not $git) {
  Write-Output 'lfs: git not found (fix: install Git for Windows with Git LFS)'
  exit {{exit_no_git}}
}
# Native programs' stderr must not become terminating errors (Windows PowerShell 5.1).
$ErrorActionPreference = 'Continue'
if (-not (Test-Path -LiteralPath (Join-Path $repo '.git'))) {
  New-Item -ItemType Directory -Force -Path $repo | Out-Null
  & $git.Source -C $repo init -q
  if ($LASTEXITCODE -ne 0) { exit {{exit_no_git}} }
}
& $git.Source -C $repo config remote.origin.url $remote
if ($LASTEXITCODE -ne 0) { exit {{exit_no_git}} }
# A reachable LFS mirror for hosts that cannot reach the upstream's endpoint.
if ($env:NPULAB_LFS_URL) { & $git.Source -C $repo config lfs.url $env:NPULAB_LFS_URL }
else { & $git.Source -C $repo config --unset lfs.url *> $null }
$ErrorActionPreference = 'Stop'
$failed = @()
$i = 0
foreach ($o in $todo) {
  $i++
  $dest = Join-Path $tree $o.Path
  $ptr = "$dest.npulab-pointer"
  $part = "$dest.npulab-part"
  $err = "$dest.npulab-err"
  Write-Output ('lfs: [{0}/{1}] {2} ({3:N1} MiB)' -f $i, $todo.Count, $o.Path, ($o.Size / 1048576))
  $text = "{{pointer_version}}`noid sha256:$($o.Oid)`nsize $($o.Size)`n"
  [IO.File]::WriteAllText($ptr, $text)
  # Start-Process redirects to files: the object's bytes never pass through a PowerShell pipeline.
  $p = Start-Process -FilePath $git.Source -ArgumentList {{smudge_args}} -WorkingDirectory $repo -NoNewWindow -Wait -PassThru -RedirectStandardInput $ptr -RedirectStandardOutput $part -RedirectStandardError $err
  if (Test-LfsObject $part $o.Oid $o.Size) {
    Move-Item -LiteralPath $part -Destination $dest -Force
  } else {
    $failed += $o
    Write-Output "lfs: $($o.Path): git lfs smudge exited $($p.ExitCode); content does not match sha256 $($o.Oid) size $($o.Size)"
    if (Test-Path -LiteralPath $err) { Get-Content -LiteralPath $err | Select-Object -Last 5 }
    Remove-Item -LiteralPath $part -Force -ErrorAction SilentlyContinue
  }
  Remove-Item -LiteralPath $ptr, $err -Force -ErrorAction SilentlyContinue
}
if ($failed.Count -gt 0) {
  $names = ($failed | ForEach-Object { $_.Path + $(if ($_.Required) { ' (required)' } else { '' }) }) -join ', '
  Write-Output "lfs: $($failed.Count) object(s) not fetched: $names"
  Write-Output "fix: make $remote (or NPULAB_LFS_URL) reachable from this host (git lfs env shows the endpoint), then run invoke build again"
  exit {{exit_not_fetched}}
}
Write-Output "lfs: fetched $($todo.Count) of $($objects.Count) object(s), all verified"
exit 0
