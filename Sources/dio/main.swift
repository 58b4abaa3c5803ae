import DIOCommands

DIO.main()
