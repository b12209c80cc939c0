"""datafeed"""
