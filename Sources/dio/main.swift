import DirectIO
print("dio")
