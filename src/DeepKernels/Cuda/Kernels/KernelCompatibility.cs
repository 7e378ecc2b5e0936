namespace DeepKernels.Cuda.Kernels;

/// <summary>Whether a kernel image holds code a device can run, with a one-line reason.</summary>
internal static class KernelCompatibility
{
    /// <summary>Ready when at least one device can run the image; the reason names the device and arch.</summary>
    public static (bool Ready, string Reason) Check(KernelImage image, IReadOnlyList<CudaDeviceInfo> devices)
    {
        if (!image.HasFatbin)
            return (false, $"Kernels not built: {image.Problem ?? "no fatbin available"}");
        if (devices.Count == 0) return (false, "No device to run kernels on");
        var first = devices[0];
        if (image.Report is null)
            return (true, $"Ready: {Describe(first)} with the {image.Source} fatbin (no resource report to check its archs)");
        var report = image.Report;
        foreach (var device in devices)
        {
            string? arch = report.BestArchFor(device.ComputeCapabilityMajor, device.ComputeCapabilityMinor);
            if (arch is not null)
                return (true, $"Ready: {Describe(device)} runs {arch} {(arch.StartsWith("compute_", StringComparison.Ordinal) ? "PTX (JIT)" : "SASS")} from the {image.Source} fatbin");
        }
        return (false, $"Kernels not built for {Describe(first)}: the {image.Source} fatbin holds {string.Join(", ", report.Archs)}");
    }

    private static string Describe(CudaDeviceInfo d) =>
        $"device {d.Ordinal} {d.Name} (CC {d.ComputeCapabilityMajor}.{d.ComputeCapabilityMinor})";
}
