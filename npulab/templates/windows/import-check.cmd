call "%NPULAB_CONDA_ROOT%\condabin\conda.bat" activate {{env_name}}
if errorlevel 1 exit /b %errorlevel%
call "%~dp0{{env_cmd}}"
if errorlevel 1 exit /b %errorlevel%
python -c "import os, qlinear, RyzenAI; print(os.environ['DEVICE'], RyzenAI)"
if errorlevel 1 exit /b %errorlevel%
exit /b 0
