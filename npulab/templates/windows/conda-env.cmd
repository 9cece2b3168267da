rem input: env.yaml sha256 {{env_file_sha256}}
set "NPULAB_ENV_FILE={{env_file}}"
set "NPULAB_ENV_FILE=%NPULAB_TREE%\%NPULAB_ENV_FILE%"
if exist "%NPULAB_CONDA_ROOT%\envs\{{env_name}}\python.exe" goto :update
call "%NPULAB_CONDA_ROOT%\condabin\conda.bat" env create -n {{env_name}} -f "%NPULAB_ENV_FILE%"
if errorlevel 1 exit /b %errorlevel%
goto :done
:update
call "%NPULAB_CONDA_ROOT%\condabin\conda.bat" env update -n {{env_name}} -f "%NPULAB_ENV_FILE%"
if errorlevel 1 exit /b %errorlevel%
:done
