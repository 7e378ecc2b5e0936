using System.Globalization;

namespace DeepKernels.Model.Presets;

/// <summary>Publishing generated checkpoints into the cache directory safely.</summary>
internal static class CheckpointCache
{
    /// <summary>
    /// Writes a checkpoint into a temporary sibling of <paramref name="directory"/> with
    /// <paramref name="write"/>, then renames it into place, so a reader never sees a half-written
    /// checkpoint and two processes racing to write it both end up with one complete copy.
    /// Returns whether this call published it (false when another process won the race).
    /// </summary>
    public static bool Publish(string directory, Action<string> write)
    {
        string temp = directory + ".tmp-" + Environment.ProcessId.ToString(CultureInfo.InvariantCulture) + "-" + Guid.NewGuid().ToString("N")[..8];
        Directory.CreateDirectory(temp);
        try
        {
            write(temp);
            try
            {
                Directory.Move(temp, directory);
                return true;
            }
            catch (IOException) when (Directory.Exists(directory))
            {
                Directory.Delete(temp, recursive: true); // another process won the race
                return false;
            }
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            throw;
        }
    }
}
