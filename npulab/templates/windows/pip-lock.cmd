rem input: {{lock_name}} sha256 {{lock_sha256}}
call "%NPULAB_CONDA_ROOT%\condabin\conda.bat" activate {{env_name}}
if errorlevel 1 exit /b %errorlevel%
set "NPULAB_LOCK={{lock_name}}"
python -m pip install --require-hashes --no-deps -r "%~dp0%NPULAB_LOCK%"
if errorlevel 1 exit /b %errorlevel%
python "%~dp0{{check_lock}}" "%~dp0%NPULAB_LOCK%"
if errorlevel 1 exit /b %errorlevel%
