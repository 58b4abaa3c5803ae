import ArgumentParser

@main
struct DIO: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dio",
        abstract: "Direct I/O for Linux: inspect device limits, move bytes without copies.",
        subcommands: [Inspect.self])
}
