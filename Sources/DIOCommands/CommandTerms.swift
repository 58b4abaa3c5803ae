import DirectIO

extension DirectIOError {
    /// The error as a command says it: the library's remedy for a filesystem without
    /// O_DIRECT (an open option) becomes the command's own (`remedy`, e.g. an option).
    func inCommandTerms(remedy: String) -> DirectIOError {
        guard code == .directIOUnsupported, let detail, detail.hasSuffix(OpenOptions.bufferedRemedy) else { return self }
        var error = self
        error.detail = String(detail.dropLast(OpenOptions.bufferedRemedy.count)) + remedy
        return error
    }
}
