rem input: ops\cpp and setup.bat sha256 {{ops_cpp_sha256}}
set "NPULAB_VSWHERE={{vswhere}}"
set "NPULAB_VS="
for /f "usebackq delims=" %%i in (`"%NPULAB_VSWHERE%" -products * -version {{vs_range_in_for}} -requires {{vc_component}} -property installationPath`) do set "NPULAB_VS=%%i"
if errorlevel 1 exit /b %errorlevel%
if not defined NPULAB_VS exit /b 3
call "%NPULAB_VS%\VC\Auxiliary\Build\vcvars64.bat"
if errorlevel 1 exit /b %errorlevel%
call "%NPULAB_CONDA_ROOT%\condabin\conda.bat" activate {{env_name}}
if errorlevel 1 exit /b %errorlevel%
set "NPULAB_STACK={{stack}}"
cd /d "%NPULAB_TREE%\%NPULAB_STACK%"
if errorlevel 1 exit /b %errorlevel%
call setup.bat
if errorlevel 1 exit /b %errorlevel%
python -m pip install ops\cpp --force-reinstall --no-deps
if errorlevel 1 exit /b %errorlevel%
