#!/usr/bin/env pwsh
# PowerShell twin of build.sh: build | test | run | bench | profile | pack | gpu-bundle | clean.
param(
    [Parameter(Position = 0)][string]$Command = 'help',
    [Parameter(Position = 1, ValueFromRemainingArguments = $true)][string[]]$Rest = @()
)
$ErrorActionPreference = 'Stop'
$Root = $PSScriptRoot
$Config = if ($env:CONFIG) { $env:CONFIG } else { 'Release' }
$NativeDir = Join-Path $Root 'build/native'

function Find-Nvcc {
    if ($env:NVCC -and (Test-Path $env:NVCC)) { return $env:NVCC }
    $c = Get-Command nvcc -ErrorAction SilentlyContinue
    if ($c) { return $c.Source }
    if ($env:CUDA_PATH -and (Test-Path (Join-Path $env:CUDA_PATH 'bin/nvcc.exe'))) { return (Join-Path $env:CUDA_PATH 'bin/nvcc.exe') }
    return $null
}

function Invoke-Build {
    New-Item -ItemType Directory -Force (Join-Path $Root 'build') | Out-Null
    if (Get-Command cmake -ErrorAction SilentlyContinue) {
        $nvcc = Find-Nvcc
        $args = @('-S', (Join-Path $Root 'native'), '-B', $NativeDir, '-DCMAKE_BUILD_TYPE=Release')
        if ($nvcc) { $args += "-DCMAKE_CUDA_COMPILER=$nvcc" } else { $args += '-DDEEPKERNELS_CUDA=OFF' }
        cmake @args | Out-Null
        if ($LASTEXITCODE -ne 0) { throw 'cmake configure failed' }
        cmake --build $NativeDir --config Release
        if ($LASTEXITCODE -ne 0) { throw 'native build failed' }
    } else {
        Write-Host '[build] cmake not found: skipping native kernels and the emulator.'
    }
    dotnet build (Join-Path $Root 'Kernels.sln') -c $Config -nologo -clp:ErrorsOnly "-p:NativeBuildDir=$NativeDir/"
    if ($LASTEXITCODE -ne 0) { throw 'managed build failed' }
}

function Invoke-Cli([string[]]$CliArgs) {
    dotnet (Join-Path $Root "src/DeepKernels.Cli/bin/$Config/net10.0/DeepKernels.Cli.dll") @CliArgs
    exit $LASTEXITCODE
}

switch ($Command) {
    'build' { Invoke-Build }
    'test' {
        Invoke-Build
        $results = Join-Path $Root 'build/test-results'
        Remove-Item -Recurse -Force $results -ErrorAction SilentlyContinue
        dotnet test (Join-Path $Root 'tests/DeepKernels.Tests/DeepKernels.Tests.csproj') -c $Config --no-build -nologo --logger 'trx;LogFileName=tests.trx' --results-directory $results @Rest
        $rc = $LASTEXITCODE
        [xml]$trx = Get-Content (Join-Path $results 'tests.trx')
        $c = $trx.TestRun.ResultSummary.Counters
        $failed = [int]$c.failed + [int]$c.error + [int]$c.timeout + [int]$c.aborted
        if ($rc -ne 0 -and $failed -eq 0) { $failed = 1 }
        $skipped = [int]$c.total - [int]$c.passed - $failed
        Write-Host "tests: $($c.passed) passed, $failed failed, $skipped skipped"
        if ($failed -ne 0) { exit 1 }
    }
    'run' { Invoke-Build | Out-Null; Invoke-Cli (@('run') + $Rest) }
    'bench' { Invoke-Build | Out-Null; Invoke-Cli (@('bench') + $Rest) }
    'profile' { Invoke-Build | Out-Null; Invoke-Cli (@('profile') + $Rest) }
    'pack' {
        Invoke-Build
        dotnet pack (Join-Path $Root 'src/DeepKernels/DeepKernels.csproj') -c $Config --no-build -nologo -o (Join-Path $Root 'artifacts/packages') "-p:NativeBuildDir=$NativeDir/"
    }
    'gpu-bundle' { Invoke-Build | Out-Null; bash (Join-Path $Root 'tools/gpu-bundle/make-bundle.sh') @Rest }
    'clean' { Remove-Item -Recurse -Force (Join-Path $Root 'build'), (Join-Path $Root 'artifacts') -ErrorAction SilentlyContinue }
    default { Get-Content (Join-Path $Root 'build.sh') | Select-String '^  [a-z-]+ ' | ForEach-Object { $_.Line } }
}
