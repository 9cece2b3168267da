# Enables a WinRM HTTP listener on this machine for a local user whose random password lives
# only in this CI job, and writes an npulab inventory that reaches it on 127.0.0.1.
#
# For GitHub's hosted Windows runners (the job runs as an administrator); the same set-up
# pywinrm's own CI uses there. NTLM with message encryption over HTTP: the listener keeps
# AllowUnencrypted off and Basic auth off, so what npulab tests is what a lab host runs.
#
#   .\ci\windows\enable-winrm-localhost.ps1 -Inventory "$env:RUNNER_TEMP\winrm-local.yml"
#
# Afterwards (in later steps of the job): NPULAB_WINRM_USER, NPULAB_WINRM_PASSWORD and
# NPULAB_INVENTORY are set through $env:GITHUB_ENV (the password is masked in the log first),
# and the inventory names one host, winrm-local. Outside Actions (-EnvFile ''), the values are
# set for this PowerShell session only. Idempotent: a second run replaces the password.
# Used by .github/workflows/ci.yml (windows job) and the windows-e2e workflow.
[CmdletBinding()]
param(
    [string] $User = 'npulab-ci',
    [string] $Inventory = (Join-Path $env:RUNNER_TEMP 'winrm-local.yml'),
    [string] $HostName = 'winrm-local',
    [string] $EnvFile = $env:GITHUB_ENV
)
$ErrorActionPreference = 'Stop'
Set-StrictMode -Version 3

function New-CiPassword {
    # 24 random bytes as base64 (32 characters) plus one of each class, so any local
    # complexity policy accepts it. Never printed; masked before it reaches GITHUB_ENV.
    $bytes = New-Object byte[] 24
    $rng = [System.Security.Cryptography.RandomNumberGenerator]::Create()
    try { $rng.GetBytes($bytes) } finally { $rng.Dispose() }
    return [Convert]::ToBase64String($bytes).Replace('/', 'x').Replace('+', 'y') + 'aA1!'
}

$password = New-CiPassword
if ($EnvFile) { Write-Output "::add-mask::$password" }
$secure = ConvertTo-SecureString -AsPlainText -Force -String $password

$existing = Get-LocalUser -Name $User -ErrorAction SilentlyContinue
if ($existing) {
    Set-LocalUser -Name $User -Password $secure
} else {
    $null = New-LocalUser -Name $User -Password $secure -AccountNeverExpires `
        -PasswordNeverExpires -Description 'npulab CI WinRM user (this job only)'
}
$admins = Get-LocalGroup -SID 'S-1-5-32-544'
if (-not (Get-LocalGroupMember -Group $admins -Member $User -ErrorAction SilentlyContinue)) {
    Add-LocalGroupMember -Group $admins -Member $User
}

# WinRM service, HTTP listener on every address (5985), firewall rule: what a lab host has.
# -SkipNetworkProfileCheck: hosted runners' adapters may be on the Public profile.
Enable-PSRemoting -Force -SkipNetworkProfileCheck | Out-Null
# Local administrators keep their full token over a network logon (UAC remote restrictions
# would hand a local account a filtered token over NTLM otherwise).
$policy = 'HKLM:\SOFTWARE\Microsoft\Windows\CurrentVersion\Policies\System'
Set-ItemProperty -Path $policy -Name LocalAccountTokenFilterPolicy -Value 1 -Type DWord
Set-Item -Path WSMan:\localhost\Service\AllowUnencrypted -Value $false
Set-Item -Path WSMan:\localhost\Service\Auth\Basic -Value $false
Set-Item -Path WSMan:\localhost\Service\Auth\Negotiate -Value $true
# Room for npulab's uploads (8 MiB parts over stdin) and long steps.
Set-Item -Path WSMan:\localhost\MaxEnvelopeSizekb -Value 8192
Set-Item -Path WSMan:\localhost\Shell\MaxMemoryPerShellMB -Value 2048
Restart-Service -Name WinRM

# Wait for the listener instead of trusting the restart.
$deadline = (Get-Date).AddSeconds(60)
while ($true) {
    try { $null = Test-WSMan -ComputerName localhost; break } catch {
        if ((Get-Date) -gt $deadline) { throw "WinRM did not answer on localhost within 60 s: $_" }
        Start-Sleep -Seconds 2
    }
}

$lines = @(
    '# Written by ci/windows/enable-winrm-localhost.ps1: this machine over WinRM HTTP (NTLM).',
    'all:',
    '  children:',
    '    npu_lab:',
    '      hosts:',
    "        ${HostName}:",
    '          ansible_host: 127.0.0.1',
    '          ansible_port: 5985',
    '          ansible_winrm_scheme: http',
    '          ansible_winrm_transport: ntlm',
    '          ansible_winrm_message_encryption: always',
    '          npulab_chip: 7940HS'
)
$dir = Split-Path -Parent $Inventory
if ($dir -and -not (Test-Path -LiteralPath $dir)) { $null = New-Item -ItemType Directory -Path $dir }
[System.IO.File]::WriteAllLines($Inventory, $lines)

$values = [ordered]@{
    NPULAB_WINRM_USER = $User
    NPULAB_WINRM_PASSWORD = $password
    NPULAB_INVENTORY = $Inventory
}
foreach ($name in $values.Keys) {
    if ($EnvFile) {
        Add-Content -LiteralPath $EnvFile -Value "$name=$($values[$name])" -Encoding utf8
    } else {
        Set-Item -Path "env:$name" -Value $values[$name]
    }
}
Write-Output "WinRM HTTP listener on localhost:5985 for $User; inventory $Inventory (host $HostName)"
