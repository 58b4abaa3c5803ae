import ArgumentParser

/// The `dio` command line. The commands live in this library so tests can parse and run them;
/// the `dio` executable only calls `DIO.main()`.
public struct DIO: ParsableCommand {
    public init() {}

    public static let configuration = CommandConfiguration(
        commandName: "dio",
        abstract: "Direct I/O for Linux: inspect device limits, move bytes without copies.",
        subcommands: [Inspect.self, Bench.self, BenchSend.self, Verify.self, Copy.self, LogCommand.self])
}
