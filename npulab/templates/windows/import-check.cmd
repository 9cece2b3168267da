call "%NPULAB_CONDA_ROOT%\condabin\conda.bat" activate {{env_name}}
if errorlevel 1 exit /b %errorlevel%
call "%~dp0{{env_cmd}}"
if errorlevel 1 exit /b %errorlevel%
rem The 1.1 runtime needs the XDNA1 NPU with its driver started. Without it the step exits 6
rem (documented), after trying the import anyway so that the log says whether the build imports.
powershell.exe -NoProfile -NonInteractive -Command "$npu = Get-PnpDevice -PresentOnly -ErrorAction SilentlyContinue | Where-Object { $_.InstanceId -like 'PCI\VEN_1022&DEV_1502*' -and $_.Status -eq 'OK' }; if ($npu) { exit 0 } else { exit 1 }"
if errorlevel 1 goto :nodriver
python -c "import os, qlinear, RyzenAI; print(os.environ['DEVICE'], RyzenAI)"
if errorlevel 1 exit /b %errorlevel%
exit /b 0
:nodriver
echo win-import-check: no XDNA1 NPU with a started driver (PCI VEN_1022, DEV_1502): trying the import anyway
python -c "import os, qlinear, RyzenAI; print(os.environ['DEVICE'], RyzenAI)"
if errorlevel 1 goto :noimport
echo win-import-check: the build imports; running it needs the NPU (exit 6)
exit /b 6
:noimport
echo win-import-check: the import fails as well, see above (exit 6)
exit /b 6
