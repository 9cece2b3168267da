rem input: conda part of env.yaml sha256 {{conda_env_sha256}}
rem the pip part comes only from the lock, with hashes (next step)
set "NPULAB_ENV_FILE=%~dp0{{conda_env_file}}"
if exist "%NPULAB_CONDA_ROOT%\envs\{{env_name}}\python.exe" goto :update
call "%NPULAB_CONDA_ROOT%\condabin\conda.bat" env create -n {{env_name}} -f "%NPULAB_ENV_FILE%"
if errorlevel 1 exit /b %errorlevel%
goto :done
:update
call "%NPULAB_CONDA_ROOT%\condabin\conda.bat" env update -n {{env_name}} -f "%NPULAB_ENV_FILE%"
if errorlevel 1 exit /b %errorlevel%
:done
